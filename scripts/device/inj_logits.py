"""Injective, CPU vs CUDA, teacher-forced: the next-token logits of a bundle's LM along one fixed token sequence
(scripts/device_check.py's batch-1 prompt, then the digits of the series' next 24 values), for each weights file,
device and KV cache type, against a reference: the f16 weights upcast to f32 (pack.sh), run by ggml on the CPU with
an f32 cache.

    python scripts/device/inj_logits.py BUNDLE REFERENCE_F32_GGUF OUT_DIR cpu,cuda

Greedy forecasts of two devices can part at the first digit whose top two logits are closer than the devices'
difference, and then differ everywhere after; logits along one fixed sequence say how far each path is from the
reference and at which margins its top digit moves. Prints a JSON line per run; writes OUT_DIR/inj_logits.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from alignts.kernels.digits import encode_digits
from alignts.kernels.scaler import llmtime_scale
from alignts.runtime import load
from alignts.runtime.backends.gguf import LlamaCppModel


def token_sequence(bundle: str, horizon: int = 24) -> tuple[np.ndarray, int, list[int]]:
    """(prompt + continuation ids, prompt length, the ids the sampler may pick: digits and the value separator)."""
    f = load(bundle)
    f.set_sampling(greedy=True, n_samples=1)
    L = f.plan(variant=f.manifest.variants[0].name, device="cpu", batch_size=1).context_len
    rng = np.random.default_rng(1)
    t = np.arange(L + horizon, dtype=np.float64)
    x = np.sin(2 * np.pi * t / 24) * rng.uniform(0.5, 2) + rng.normal(0, 0.1, L + horizon)
    prompts, off, sc = f.prompter.prompts(x[None, :L], horizon, n_values=f.context_used)
    cont, n = encode_digits(llmtime_scale(x[None, L:], off, sc), f.prompter.table, f.prompter.settings.precision)
    tab = f.prompter.table
    allowed = sorted({int(i) for i in [*tab.digit_ids, *np.atleast_1d(tab.value_sep)] if int(i) >= 0})
    return np.concatenate([prompts[0], cont[0, : n[0]]]).astype(np.int64), int(prompts[0].size), allowed


def logits(path: str | Path, seq: np.ndarray, n_prompt: int, device: str, kv: str) -> np.ndarray:
    """[steps, n_vocab]: after the prompt, then after each continuation token but the last."""
    with LlamaCppModel(path, n_ctx=1024, n_batch=512, n_seq_max=1, n_threads=4, device=device, kv_type=kv) as m:
        rows = [m.prefill(seq[:n_prompt], 1)[0]]
        rows += [m.step([int(tok)])[0] for tok in seq[n_prompt:-1]]
    return np.stack(rows).astype(np.float64)


def main(bundle: str, reference: str, out: str, devices: list[str]) -> None:
    seq, n_prompt, allowed = token_sequence(bundle)
    print(f"prompt {n_prompt} tokens, {seq.size - n_prompt} forced, {len(allowed)} allowed ids", flush=True)
    ref = logits(reference, seq, n_prompt, "cpu", "f32")[:, allowed]
    top_ref = ref.argmax(1)
    srt = np.sort(ref, axis=1)
    margin = srt[:, -1] - srt[:, -2]
    rows = []
    for weights in sorted(Path(bundle).glob("*.gguf")):
        for device in devices:
            for kv in ("f32", "f16"):
                r = {"weights": weights.name, "device": device, "kv": kv}
                try:
                    got = logits(weights, seq, n_prompt, device, kv)[:, allowed]
                except Exception as e:  # noqa: BLE001 - one failing run must not hide the others
                    r["error"] = f"{type(e).__name__}: {e}"
                else:
                    d = np.abs(got - ref)
                    flips = np.flatnonzero(got.argmax(1) != top_ref)
                    r.update(max_abs_diff=float(d.max()), mean_abs_diff=float(d.mean()),
                             top1_agree=float(1 - flips.size / len(top_ref)), flip_steps=flips.tolist(),
                             ref_margin_at_flips=[round(float(m), 4) for m in margin[flips]])
                    np.save(Path(out) / f"{weights.stem}_{device}_{kv}.npy", got.astype(np.float32))
                rows.append(r)
                print(json.dumps(r), flush=True)
    Path(out, "inj_logits.json").write_text(json.dumps(
        {"prompt_tokens": n_prompt, "steps": int(ref.shape[0]), "ref_margin_min": float(margin.min()),
         "rows": rows}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(","))
