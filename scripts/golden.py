#!/usr/bin/env python3
"""Write the golden vectors the native C kernels are tested against (native/golden/*.txt).

Inputs are drawn from fixed seeds; outputs come from the Python kernels (alignts.kernels, numba), so the C
library (native/) and Python cannot drift: ctest compares C against these files, and
tests/test_native_golden.py regenerates them and compares with the committed ones.

Format (text, version GOLDEN_VERSION): the first line is ``alignts-golden <version> <kernel>``; lines
starting with ``#`` are comments; each array is a header line ``<name> <f64|i64> <ndim> <dim>...``
followed by its values in row-major order, up to 8 per line. Floats are written with Python's ``repr``
(shortest round-trip form; ``nan``, ``inf``), so ``strtod`` reads back the exact double.

The constrained sampler has no Python kernel in alignts.kernels (the runtime's sampler lives in
alignts/runtime/sampler.py); ``sample_ref`` below is the reference the C sampler is tested against.

Usage: python scripts/golden.py [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alignts.kernels import digits, norm, patch, scaler, stream  # noqa: E402

GOLDEN_VERSION = 1
MASK64 = (1 << 64) - 1


class Golden:
    """Arrays of one kernel's golden file, in insertion order."""

    def __init__(self, kernel: str):
        self.kernel = kernel
        self.arrays: list[tuple[str, np.ndarray]] = []

    def add(self, name: str, value) -> None:
        a = np.asarray(value)
        if a.ndim == 0:
            a = a.reshape(1)
        if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
            a = a.astype(np.int64)
        else:
            a = a.astype(np.float64)
        assert all(name != n for n, _ in self.arrays), name
        self.arrays.append((name, a))

    def text(self) -> str:
        lines = [f"alignts-golden {GOLDEN_VERSION} {self.kernel}",
                 "# written by scripts/golden.py from alignts.kernels; regenerate, do not edit"]
        for name, a in self.arrays:
            kind = "i64" if a.dtype == np.int64 else "f64"
            lines.append(f"{name} {kind} {a.ndim} " + " ".join(str(d) for d in a.shape))
            flat = a.reshape(-1)
            fmt = (lambda v: str(int(v))) if kind == "i64" else (lambda v: repr(float(v)))
            for i in range(0, flat.size, 8):
                lines.append(" ".join(fmt(v) for v in flat[i:i + 8]))
        return "\n".join(lines) + "\n"


def _with_nan(rng: np.random.Generator, x: np.ndarray, frac: float) -> np.ndarray:
    x = x.copy()
    x[rng.random(x.shape) < frac] = np.nan
    return x


def golden_norm() -> Golden:
    rng = np.random.default_rng(101)
    g = Golden("norm")
    x = np.cumsum(rng.normal(size=(5, 37)), axis=1) * rng.uniform(0.1, 100, size=(5, 1))
    x = _with_nan(rng, x, 0.1)
    x[3] = 2.5  # a constant series: std = sqrt(eps)
    eps = 1e-5
    mean, std = norm.instance_stats(x, eps)
    y = norm.instance_norm(x, mean, std)
    g.add("eps", eps)
    g.add("x", x)
    g.add("mean", mean[:, 0])
    g.add("std", std[:, 0])
    g.add("y", y)
    g.add("back", norm.instance_denorm(y, mean, std))
    return g


def golden_patch() -> Golden:
    rng = np.random.default_rng(102)
    g = Golden("patch")
    for case, (s_n, length, p, stride, fill) in {"a": (3, 64, 16, 8, 1), "b": (2, 23, 5, 3, 0),
                                                 "c": (2, 7, 7, 7, 1), "d": (2, 30, 4, 9, 1)}.items():
        x = _with_nan(rng, rng.normal(size=(s_n, length)) * 3 + 1, 0.08)
        x[:, 0] = rng.normal(size=s_n)  # keep every series observed
        eps = 1e-5
        out, mean, std = patch.norm_patchify(x, p, stride, eps, bool(fill))
        g.add(f"{case}.params", [p, stride, fill])
        g.add(f"{case}.eps", eps)
        g.add(f"{case}.x", x)
        g.add(f"{case}.patches", patch.patchify(x, p, stride))
        g.add(f"{case}.norm_patches", out)
        g.add(f"{case}.mean", mean[:, 0])
        g.add(f"{case}.std", std[:, 0])
    return g


def golden_scaler() -> Golden:
    rng = np.random.default_rng(103)
    g = Golden("scaler")
    x = np.cumsum(rng.normal(size=(7, 41)), axis=1) * rng.uniform(0.01, 50, size=(7, 1))
    x = _with_nan(rng, x, 0.1)
    x[:, 0] = 1.0
    x[4] = 0.0        # zero series: scale 0 -> 1 / floor 0.01
    x[5] = -3.25      # constant negative series
    x[6, 1:] = np.nan  # one observed point
    g.add("x", x)
    for case, (alpha, beta, basic) in {"a": (0.95, 0.3, 0), "b": (0.95, 0.3, 1), "c": (0.5, 0.0, 0),
                                       "d": (1.0, 0.3, 0), "e": (0.0, 0.7, 1), "f": (0.37, 0.1, 0)}.items():
        offset, scale = scaler.llmtime_scaler(x, alpha, beta, bool(basic))
        g.add(f"{case}.params", [alpha, beta, basic])
        g.add(f"{case}.offset", offset[:, 0])
        g.add(f"{case}.scale", scale[:, 0])
    return g


TABLES = [
    # a tokenizer that merges digits: digits separated by a space that the value separator " ," shares
    digits.CodecTable(digit_ids=tuple(range(100, 110)), value_sep=(7, 8), digit_sep=(7,), minus_id=9,
                      end_ids=(0,)),
    # a tokenizer that splits digits: no digit separator, shuffled digit ids, two end ids
    digits.CodecTable(digit_ids=(15, 3, 4, 5, 6, 40, 41, 42, 43, 44), value_sep=(11,), minus_id=12,
                      end_ids=(2, 1)),
]


def _add_tables(g: Golden) -> None:
    for k, t in enumerate(TABLES):
        g.add(f"t{k}.digits", t.digit_ids)
        g.add(f"t{k}.vsep", np.asarray(t.value_sep, dtype=np.int64))
        g.add(f"t{k}.dsep", np.asarray(t.digit_sep, dtype=np.int64))
        g.add(f"t{k}.minus", t.minus_id)
        g.add(f"t{k}.end", np.asarray(t.end_ids, dtype=np.int64))


def golden_digits() -> Golden:
    rng = np.random.default_rng(104)
    g = Golden("digits")
    _add_tables(g)
    # encode then decode: table, precision, values
    x0 = rng.normal(size=(4, 30)) * np.array([[0.5], [3.0], [100.0], [1e-3]])
    x0[0, :3] = [0.0, -0.0, 0.0004]
    x1 = rng.normal(size=(3, 17)) * 2000
    x1[1, :2] = [9.9995, -123456.789]
    for case, (tk, p, x) in {"e0": (0, 3, x0), "e1": (1, 2, x1), "e2": (0, 0, x1)}.items():
        ids, lengths = digits.encode_digits(x, TABLES[tk], p)
        h = x.shape[1]
        values, n_parsed = digits.decode_digits(ids, lengths, TABLES[tk], p, h)
        g.add(f"{case}.params", [tk, p, h])
        g.add(f"{case}.x", x)
        g.add(f"{case}.ids", ids)
        g.add(f"{case}.lengths", lengths)
        g.add(f"{case}.values", values)
        g.add(f"{case}.n_parsed", n_parsed)
    # decode of arbitrary streams: digits, separators, minus, end ids, unknown ids, padding
    for case, (tk, p, h) in {"d0": (0, 3, 6), "d1": (1, 1, 4)}.items():
        t = TABLES[tk]
        pool = np.array(t.digit_ids * 4 + t.value_sep * 3 + t.digit_sep * 3 + (t.minus_id,) + t.end_ids
                        + (55, -1), dtype=np.int64)
        ids = rng.choice(pool, size=(40, 24))
        lengths = rng.integers(0, 25, size=40)
        ids[0, :20] = t.digit_ids[1]  # more than 18 digits in a row
        values, n_parsed = digits.decode_digits(ids, lengths, t, p, h)
        g.add(f"{case}.params", [tk, p, h])
        g.add(f"{case}.ids", ids)
        g.add(f"{case}.lengths", lengths)
        g.add(f"{case}.values", values)
        g.add(f"{case}.n_parsed", n_parsed)
    return g


# ------------------------------------------------------------------------------- sampler reference

def splitmix64(state: int) -> tuple[int, int]:
    """(new state, 64 random bits): the C at_splitmix64."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def sample_ref(logits: np.ndarray, allowed, temperature: float, top_p: float, state: int) -> tuple[int, int]:
    """(token id, new state): the C at_sample, with the same double arithmetic (math.exp is libm's exp)."""
    allowed = [int(i) for i in allowed]
    lg = [float(np.float32(logits[i])) for i in allowed]
    if temperature == 0.0:  # the first maximum in allowed order (numpy's argmax)
        best = 0
        for i in range(1, len(allowed)):
            if lg[i] > lg[best]:
                best = i
        return allowed[best], state
    z = [v / temperature for v in lg]
    zmax = max(z)
    p = [math.exp(v - zmax) for v in z]
    total = 0.0
    for v in p:
        total += v
    p = [v / total for v in p]
    order = sorted(range(len(allowed)), key=lambda i: -p[i])  # stable: ties keep the allowed order
    keep, cum = len(order), 0.0
    for k, i in enumerate(order):
        cum += p[i]
        if cum >= top_p:
            keep = k + 1
            break
    total = 0.0
    for i in order[:keep]:
        total += p[i]
    state, bits = splitmix64(state)
    u = (bits >> 11) * (1.0 / 9007199254740992.0) * total
    cum = 0.0
    for i in order[:keep]:
        cum += p[i]
        if u < cum:
            return allowed[i], state
    return allowed[order[keep - 1]], state


def golden_sampler() -> Golden:
    rng = np.random.default_rng(106)
    g = Golden("sampler")
    vocab, rows, draws = 64, 6, 12
    logits = (rng.normal(size=(rows, vocab)) * 3).astype(np.float32)
    logits[1, [3, 7, 20]] = logits[1].max() + 1  # a tie for greedy: the first in allowed order (20) wins
    logits[2, [22, 23]] = logits[2].max() + 1    # a tie in the sorted probabilities
    allowed = np.array([21, 20, 3, 7, 22, 23, 24, 25, 26, 27, 28, 29, 40, 63], dtype=np.int64)
    g.add("logits", logits.astype(np.float64))
    g.add("allowed", allowed)
    for case, (temp, top_p, seed) in {"c0": (0.0, 1.0, 0), "c1": (0.9, 0.9, 42), "c2": (1.0, 1.0, 7),
                                      "c3": (0.5, 0.5, 2**63 + 5), "c4": (2.0, 0.99, 123456789)}.items():
        out = np.empty((rows, draws), dtype=np.int64)
        for r in range(rows):
            state = (seed + r) & MASK64
            for d in range(draws):
                out[r, d], state = sample_ref(logits[r], allowed, temp, top_p, state)
        g.add(f"{case}.params", [temp, top_p])
        # the seed as two 32-bit halves (i64 holds them exactly whatever the top bit)
        g.add(f"{case}.seed", [seed >> 32, seed & 0xFFFFFFFF])
        g.add(f"{case}.draws", out)
    return g


def golden_stream() -> Golden:
    rng = np.random.default_rng(107)
    g = Golden("stream")
    x = _with_nan(rng, np.cumsum(rng.normal(size=(60, 3)), axis=0) * 10 + 100, 0.1)
    x[20:30, 2] = np.nan  # a gap longer than the window: that channel's window empties
    chunks = [5, 1, 17, 37]
    ws = stream.WindowStats.empty(3, 7)
    t = 0
    for k in chunks:
        ws.push(x[t:t + k])
        t += k
    g.add("w.x", x)
    g.add("w.window", ws.window)
    g.add("w.chunks", chunks)
    for name in stream.WindowStats.FIELDS:
        g.add(f"w.{name}", getattr(ws, name))
    y = np.abs(rng.normal(size=(200, 2)))
    y[120:, 1] += 2.0
    y = _with_nan(rng, y, 0.05)
    params = [0.1, 8.0, 0.999, 10.0]  # delta, threshold, alpha, min_n
    state = np.zeros((2, 4))
    alarms = stream.page_hinkley(y, state, *params)
    g.add("ph.x", y)
    g.add("ph.params", params)
    g.add("ph.alarms", alarms.astype(np.int64))
    g.add("ph.state", state)
    # incremental patching: a ring of K=4 patches of P=5, stride 2, fed in chunks (NaN kept)
    ring = np.full((3, 4, 5), np.nan)
    t = 0
    for k in chunks:
        stream.patch_push(ring, x[t:t + k], t, 2)
        t += k
    g.add("pp.params", [4, 5, 2])
    g.add("pp.ring", ring)
    # digits under a frozen scaler (values beyond +-lim clipped; negative values; both tables)
    z = np.concatenate([rng.normal(size=40) * 30 + 5, [1e6, -1e6, 5.0, 4.9996]])
    for k, (tk, p, off, sc, lim) in enumerate([(0, 3, 5.0, 7.5, 50.0), (1, 2, -3.0, 0.25, 1e4)]):
        ids, lengths = stream.encode_fixed(z, off, sc, lim, TABLES[tk], p)
        g.add(f"ef{k}.params", [tk, p])
        g.add(f"ef{k}.scaler", [off, sc, lim])
        g.add(f"ef{k}.ids", ids)
        g.add(f"ef{k}.lengths", lengths)
    g.add("ef.x", z)
    _add_tables(g)
    return g


GENERATORS = {"norm": golden_norm, "patch": golden_patch, "scaler": golden_scaler, "digits": golden_digits,
              "sampler": golden_sampler, "stream": golden_stream}


def write_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kernel, make in GENERATORS.items():
        path = out / f"{kernel}.txt"
        path.write_text(make().text())
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "native" / "golden", help="folder (default native/golden)")
    args = ap.parse_args(argv)
    for p in write_all(args.out):
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
