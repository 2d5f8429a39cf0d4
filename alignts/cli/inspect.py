"""`alignts inspect`: describe a bundle: paradigm, files with sizes, variants with validation, config.

Every GGUF a variant reads goes through the runtime's checks (alignts.runtime.gguf_check: the header, llama.cpp's
limits, NaN weights in small files; adapters against their base), so a file llama.cpp would refuse or abort on
makes ``inspect`` fail with the reason instead of describing it."""

from __future__ import annotations

from alignts.cli.output import add_format_argument


def add_arguments(p):
    p.add_argument("bundle", help="bundle folder")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of every file")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the whole manifest as JSON to PATH")
    add_format_argument(p, what="the variants table (one row per variant)")
    p.add_argument("--budget", default=None, help="memory budget (e.g. 300MB, 1.5GiB): print the plan that "
                   "fits it (variant, batch, estimated peak) without loading anything")
    p.add_argument("--batch-size", type=int, default=1, help="batch size for --budget (default 1)")


def _short(v, width: int = 100) -> str:
    s = str(v)
    return s if len(s) <= width else s[:width - 3] + "..."


def check_ggufs(bundle, m, verify: bool = True) -> list[str]:
    """Run the GGUF checks on every GGUF file the variants read; returns the names checked (ArtifactError on the
    first bad one)."""
    from alignts.runtime.gguf_check import check_gguf, check_lora_adapter
    from alignts.runtime.manifest import bundle_file

    checked: list[str] = []
    for v in m.variants:
        if v.backend != "gguf":
            continue
        # a LoRA adapter is a GGUF; Bridging's adapter_file is the ONNX adapter beside a GGUF backbone
        adapters = {n for n in (v.extra.get(k) for k in ("adapter_file", "lora_file"))
                    if isinstance(n, str) and n.endswith(".gguf")}
        models = [n for n in m.reads(v) if n.endswith(".gguf") and n not in adapters]
        for name in models + sorted(adapters):
            if name in checked:
                continue
            path = bundle_file(bundle, m, name, verify=verify)
            if name in adapters and models:
                check_lora_adapter(path, bundle_file(bundle, m, models[0], verify=verify))
            else:
                check_gguf(path)
            checked.append(name)
    return checked


def run(args) -> int:
    import json

    from alignts.runtime.manifest import read_manifest

    m = read_manifest(args.bundle, verify=not args.no_verify)
    checked = check_ggufs(args.bundle, m, verify=not args.no_verify)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(json.dumps(m.to_dict(), indent=2, sort_keys=True) + "\n")
    if args.format:
        from alignts.cli.output import write_table

        write_table([{"variant": v.name, "backend": v.backend, "dtype": v.dtype, "weight_bytes": v.weight_bytes,
                      "files": list(v.files), "validation": dict(v.validation), "accuracy": dict(v.accuracy)}
                     for v in m.variants], args.format)
        return 0
    total = sum(e.size for e in m.files.values())
    print(f"bundle {args.bundle}: paradigm {m.paradigm}, architecture {m.architecture}, "
          f"format {m.format} {m.format_version}" + ("" if args.no_verify else ", sha256 verified"))
    if checked:
        print(f"gguf checks passed: {', '.join(checked)}")
    print(f"files ({len(m.files)}, {total / 1e6:.1f} MB):")
    for name, e in sorted(m.files.items()):
        print(f"  {name:28s} {e.size / 1e6:9.2f} MB  sha256 {e.sha256[:16]}")
    print("variants (as written):")
    for v in m.variants:
        val = dict(v.validation)
        parts = [f"max|diff| {val['max_abs_diff']:.2e}" if "max_abs_diff" in val else ""]
        if val.get("relative_max_abs_diff") is not None:
            parts.append(f"relative {val['relative_max_abs_diff']:.2e}")
        if val.get("end_to_end_max_abs_diff") is not None:
            parts.append(f"end-to-end {val['end_to_end_max_abs_diff']:.2e}")
        tol = val.get("tolerance", val.get("relative_tolerance"))
        if tol is not None:
            parts.append(f"tol {tol:g}")
        print(f"  {v.name:14s} {v.backend:5s} {v.dtype:5s} {v.weight_bytes / 1e6:8.2f} MB  "
              f"{', '.join(p for p in parts if p)}  files: {', '.join(v.files)}")
        if v.accuracy:
            print(f"  {'':14s} gate: {_gate_line(v.accuracy)}")
    print_planner_order(m)
    print("quantiles: " + _quantiles_line(m))
    from alignts.runtime.stream.engines import stream_line

    print("streams: " + stream_line(m))
    print("config:")
    for k, v in m.config.items():
        print(f"  {k}: {_short(v)}")
    for title, d in (("normalization", m.normalization), ("codec", m.codec), ("lora", m.lora),
                     ("backbone", m.backbone), ("limits", m.limits)):
        if d:
            print(f"{title}: " + ", ".join(f"{k}={_short(v, 70)}" for k, v in d.items()))
    if m.training:
        t = m.training
        keys = ("command", "backbone", "n_layers", "epochs_run", "stopped_by", "best_val_mse", "train_wall_s",
                "time_budget_s", "max_train_windows", "seed")
        print("training: " + ", ".join(f"{k}={_short(t[k], 200)}" for k in keys if k in t))
    if m.versions:
        print("versions: " + ", ".join(f"{k} {v}" for k, v in m.versions.items()))
    if args.budget is not None:
        from alignts.runtime.budget import choose, describe_plan, parse_budget

        choice = choose(m, parse_budget(args.budget), args.batch_size, bundle_dir=args.bundle)
        print(describe_plan(choice))
    return 0


def _quantiles_line(m) -> str:
    """Where this bundle's forecast quantiles come from (the forecast contract: bundles without them say so)."""
    if m.paradigm == "injective":
        return "from the samples"
    if m.paradigm == "backbone":
        return "none (a backbone bundle forecasts nothing)"
    from alignts.runtime.configs import runtime_config

    c = runtime_config(m).conformal
    if not c:
        return "none (not calibrated). Fix: alignts calibrate BUNDLE --data DATA"
    return (f"split-conformal on {c.get('n_windows')} {c.get('split')} windows, levels "
            f"{min(c['levels']):g}..{max(c['levels']):g}")


def _gate_line(acc) -> str:
    """The accuracy gate's record of one variant in a line: its validation MSE change, verdict and timing."""
    rel = acc.get("rel_mse_change")
    verdict = {True: "within the gate", False: "over the gate"}.get(acc.get("passed"), "not judged")
    out = (f"val MSE {rel * 100:+.2f} %" if isinstance(rel, (int, float)) else "val MSE -") + f", {verdict}"
    if isinstance(acc.get("ms_per_series"), (int, float)):
        out += f", {acc['ms_per_series']:.3g} ms/series"
        out += f" on {acc['cpu']}" if acc.get("cpu") else ""
    return out


def print_planner_order(m) -> None:
    """The order the planner tries the variants in (with this machine's backends), and whether it was timed here."""
    from alignts.runtime.budget import available_backends, is_gated, rank_variants, timed_elsewhere
    from alignts.runtime.threads import cpu_label

    order = [v.name for v in rank_variants(m, backends=available_backends())]
    print("planner order here: " + (" > ".join(order) or "none (no usable backend)")
          + (" (the fastest within the accuracy gate first)" if is_gated(m) else " (the most accurate first)"))
    where = timed_elsewhere(m)
    if where is not None:
        print(f"  timed on {where}; this CPU is {cpu_label()}: the order may differ here")

