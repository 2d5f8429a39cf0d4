"""`alignts quantize BUNDLE`: add quantized variants (ONNX int8, GGUF f16/q8_0/q4_0), each validated against
the bundle's fp32 variant through the runtime; the error goes into the manifest."""

from __future__ import annotations

from pathlib import Path


def add_arguments(p):
    p.add_argument("bundle", type=Path, help="bundle folder (manifest.json)")
    p.add_argument("--to", default="int8,q8_0,q4_0",
                   help="comma-separated dtypes: int8 (ONNX, from onnx-fp32), f16, q8_0, q4_0 (GGUF, from "
                        "gguf-f32), ort (an ORT-format twin of every ONNX variant, with its required-operators "
                        "config, for reduced onnxruntime builds; Internal bundles); default int8,q8_0,q4_0")
    p.add_argument("--out", type=Path, default=None, help="write a copy with the new variants here (default: in place)")
    p.add_argument("--overwrite", action="store_true", help="rebuild variants that exist / replace --out")
    p.add_argument("--check-windows", type=int, default=8, help="random inputs for the validation (default 8)")


def run(args) -> int:
    from alignts.errors import InputError
    from alignts.export.quantize import quantize_bundle
    from alignts.runtime.budget import format_bytes

    if args.check_windows < 1:
        raise InputError(f"--check-windows must be >= 1; got {args.check_windows}.")
    dtypes = [d.strip() for d in args.to.split(",") if d.strip()]
    ort = "ort" in dtypes
    dtypes = [d for d in dtypes if d != "ort"]
    m, rows = (quantize_bundle(args.bundle, dtypes, out=args.out, overwrite=args.overwrite,
                               n_check=args.check_windows) if dtypes else (None, []))
    if ort:  # after the ONNX dtypes, so an int8 variant made now gets its ORT twin too
        from alignts.export.ort_format import add_ort_variants

        ort_from, ort_out = (args.out, None) if dtypes and args.out else (args.bundle, args.out)
        m, ort_rows = add_ort_variants(ort_from, out=ort_out, overwrite=args.overwrite, n_check=args.check_windows)
        rows += ort_rows
    where = args.out or args.bundle
    if not rows:
        print(f"{where}: nothing to add (the variants exist; pass --overwrite to rebuild them)")
        return 0
    print(f"{where}: added {len(rows)} variant(s)")
    print("| variant | from | size | max abs diff | relative |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['source']} | {format_bytes(r['bytes'])} | {r['max_abs_diff']:.3g} | "
              f"{r['relative_max_abs_diff']:.3g} |")
    print("variants now: " + ", ".join(v.name for v in m.variants))
    return 0
