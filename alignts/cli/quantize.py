"""`alignts quantize BUNDLE`: add quantized variants (ONNX int8, GGUF f16/bf16/q8_0/q4_0); Internal bundles keep
only those within the accuracy gate (validation MSE change vs the fp32 variant, alignts.export.gate), the
same gate `alignts fit` applies; the records go into the manifest."""

from __future__ import annotations

from pathlib import Path


def add_arguments(p):
    p.add_argument("bundle", type=Path, help="bundle folder (manifest.json)")
    p.add_argument("--to", default="int8,bf16,q8_0,q4_0",
                   help="comma-separated dtypes: int8 (ONNX, from onnx-fp32; Internal: dynamic and static QDQ, "
                        "the better kept), f16, bf16, q8_0, q4_0 (GGUF, from gguf-f32), ort (an ORT-format twin of every "
                        "ONNX variant, with its required-operators config, for reduced onnxruntime builds; Internal "
                        "bundles); default int8,bf16,q8_0,q4_0")
    p.add_argument("--data", default=None,
                   help="data the bundle was fitted on, for the gate's validation windows and the static int8 "
                        "calibration (default: the manifest's training.data)")
    p.add_argument("--max-mse-change", type=float, default=None,
                   help="gate: keep a variant whose validation MSE is at most this much worse than fp32's, "
                        "relative (default 0.01 = 1 %%: alignts.export.gate.MAX_REL_MSE_CHANGE)")
    p.add_argument("--gate-windows", type=int, default=None,
                   help="validation windows the gate scores, evenly spaced (default 128: gate.GATE_WINDOWS)")
    p.add_argument("--threads", type=int, default=None, help="backend threads while judging")
    p.add_argument("--out", type=Path, default=None, help="write a copy with the new variants here (default: in place)")
    p.add_argument("--overwrite", action="store_true", help="rebuild variants that exist / replace --out")
    p.add_argument("--check-windows", type=int, default=8,
                   help="random inputs for the recorded fidelity check vs the fp32 variant (default 8)")


def run(args) -> int:
    from alignts.errors import InputError
    from alignts.export.gate import MAX_REL_MSE_CHANGE
    from alignts.export.quantize import quantize_bundle
    from alignts.runtime.budget import format_bytes

    if args.check_windows < 1:
        raise InputError(f"--check-windows must be >= 1; got {args.check_windows}.")
    if args.gate_windows is not None and args.gate_windows < 1:
        raise InputError(f"--gate-windows must be >= 1; got {args.gate_windows}.")
    dtypes = [d.strip() for d in args.to.split(",") if d.strip()]
    ort = "ort" in dtypes
    dtypes = [d for d in dtypes if d != "ort"]
    m, rows = (quantize_bundle(args.bundle, dtypes, out=args.out, overwrite=args.overwrite,
                               n_check=args.check_windows, data=args.data,
                               max_rel_mse_change=MAX_REL_MSE_CHANGE if args.max_mse_change is None else args.max_mse_change,
                               gate_windows=args.gate_windows, threads=args.threads) if dtypes else (None, []))
    if ort:  # after the ONNX dtypes, so an int8 variant made now gets its ORT twin too
        from alignts.export.ort_format import add_ort_variants

        ort_from, ort_out = (args.out, None) if dtypes and args.out else (args.bundle, args.out)
        m, ort_rows = add_ort_variants(ort_from, out=ort_out, overwrite=args.overwrite, n_check=args.check_windows)
        rows += [{**r, "kept": True} for r in ort_rows]  # the same model in another file format: no gate
    where = args.out or args.bundle
    if not rows:
        print(f"{where}: nothing to add (the variants exist; pass --overwrite to rebuild them)")
        return 0
    kept = [r for r in rows if r.get("kept")]
    print(f"{where}: added {len(kept)} of {len(rows)} candidate variant(s)")
    print("| candidate | from | size | max abs diff | relative | val MSE change | kept |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rel = r.get("rel_mse_change")
        change = "" if "verdict" not in r else ("non-finite" if rel is None else f"{100 * rel:+.2f} %")
        kept_as = r.get("kept_as") or r["variant"]
        print(f"| {r['variant']} | {r['source']} | {format_bytes(r['bytes'])} | {r['max_abs_diff']:.3g} | "
              f"{r['relative_max_abs_diff']:.3g} | {change} | {('as ' + kept_as) if r.get('kept') else 'no'} |")
    for r in rows:
        if r.get("verdict"):
            print(f"{r['variant']}: {r['verdict']}")
    print("variants now: " + ", ".join(v.name for v in m.variants))
    return 0
