"""The embedded numeric LM of the Injective paradigm: a small GPT-2 pretrained on digit-serialized series.

Vocabulary (a real byte-level BPE layout, tokenizer model ``gpt2``, so that llama.cpp and the ``tokenizers``
library both read it): ``<|endoftext|>`` (bos/eos), the ten digits, ``,``, ``-``, ``Ġ`` (space) and the merge
``Ġ ,`` -> ``Ġ,``, the LLMTime value separator ``" ,"``. Digits are single tokens, so values need no digit
separator (as LLaMA-style tokenizers that split digits).

Corpus (Chronos-style, all generated, no download): KernelSynth-like Gaussian-process draws (random composite
kernels), structural series (trends, sinusoidal seasonality, level shifts, random walks, AR noise), seasonal
profile series (a random within-period shape repeated with drifting amplitude, peak jitter, trend and noise, at
the calendar periods 4/7/12/24/52...), TSMixup (convex mixtures of 2-3 of those) and windows of the
public-domain series that statsmodels bundles. Each series is scaled with the LLMTime scaler fit on a random
prefix (as at forecast time, where it is fit on the context only) and serialized at the shipped precision (2,
some rows 3).

Training (``train``): a plain PyTorch GPT-2 whose parameters carry the Hugging Face GPT-2 names and layout
(``TinyGPT2``; no transformers needed to train), on the CPU or a CUDA GPU (bf16 autocast). With ``workers`` > 0
the corpus is drawn by that many processes while the model trains (rows reused at random when they fall
behind); with a wall budget (``budget_s``) the cosine schedule runs over wall time and training stops on time.
The weights are saved as safetensors shards (HF names) + ``training.json``; ``export`` writes the GGUF files
and the manifest (transformers + gguf needed there, not where it trains).

Rebuild:
- CPU: ``scripts/build_numeric_lm`` (``python -m alignts.export.numeric_lm build ...``; seeded, deterministic),
  the previous 0.86 M-parameter model;
- CUDA GPU (the shipped model: 6 layers x width 256, 5.0 M parameters, context 1024, 1.0 B tokens in two stages
  on an H100; results/injective_zero_shot.md has the exact commands): ``scripts/pretrain_numeric_lm_gpu.sh OUT``
  on the GPU machine (train only), then ``python -m alignts.export.numeric_lm export --hf-dir OUT/<run>`` here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from alignts.errors import InputError, ValidationError, missing_extra

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
SPACE = "\u0120"  # byte-level BPE's picture of " "
# id -> token piece; the order is the vocabulary
TOKENS: tuple[str, ...] = (EOS, *"0123456789", ",", "-", SPACE, SPACE + ",")
MERGES: tuple[str, ...] = (f"{SPACE} ,",)
EOS_ID = 0
DIGIT_IDS = tuple(range(1, 11))
COMMA_ID, MINUS_ID, SPACE_ID, SEP_ID = 11, 12, 13, 14
VOCAB_SIZE = len(TOKENS)
# token types as llama.cpp's gguf constants: 1 normal, 3 control
TOKEN_TYPES: tuple[int, ...] = (3,) + (1,) * (VOCAB_SIZE - 1)
VALUE_SEP = " ,"

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "numeric_lm"
REBUILD_COMMAND = "scripts/build_numeric_lm"
GPU_COMMAND = "scripts/pretrain_numeric_lm_gpu.sh"
SHARD_BYTES = 15 * 2 ** 20  # safetensors shards stay under 16 MiB (the GPU machine returns files up to 16 MiB)


# ----------------------------------------------------------------------------------------------- tokenizer
def build_tokenizer():
    """The numeric LM's tokenizer as a ``tokenizers.Tokenizer`` (byte-level BPE, GPT-2 layout)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(TOKENS)}
    merges = [tuple(m.split(" ")) for m in MERGES]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return tok


def gguf_vocab() -> dict:
    """The vocabulary keyword arguments of ``write_gguf`` (GPT-2 pre-tokenizer: `` ,`` stays one piece)."""
    return dict(tokens=list(TOKENS), token_types=list(TOKEN_TYPES), merges=list(MERGES), tokenizer_model="gpt2",
                tokenizer_pre="gpt-2", special_ids={"bos": EOS_ID, "eos": EOS_ID})


def write_hf_tokenizer(folder: str | Path) -> None:
    """Write tokenizer.json + tokenizer_config.json so the folder loads as a Hugging Face model folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2TokenizerFast", "bos_token": EOS, "eos_token": EOS, "unk_token": EOS,
        "model_max_length": 100000, "add_prefix_space": False}, indent=2))


# ----------------------------------------------------------------------------------------------- corpus
def _scaler(x: np.ndarray, alpha: float = 0.95, beta: float = 0.3) -> tuple[float, float]:
    """LLMTime's scaler on a 1-D context: offset m = min - beta (max - min), scale q = alpha-quantile of x - m."""
    lo, hi = float(np.min(x)), float(np.max(x))
    m = lo - beta * (hi - lo)
    q = float(np.quantile(x - m, alpha))
    if not np.isfinite(q) or q <= 1e-8:
        q = 1.0
    return m, q


def value_array(z: np.ndarray, precision: int, max_digits: int) -> np.ndarray:
    """Token ids (int64) of scaled values: sign, digits of trunc(|z| 10^p) without leading zeros, then ``" ,"``.

    Truncation (not rounding) as LLMTime's serializer; the decoder adds half a bin. Vectorized: a series of a few
    hundred values costs microseconds (the corpus draws millions of them).
    """
    z = np.asarray(z, dtype=np.float64)
    cap = 10 ** max_digits - 1
    k = np.minimum(np.floor(np.abs(z) * 10 ** precision), cap).astype(np.int64)
    n = k.size
    nd = np.ones(n, dtype=np.int64)
    for d in range(1, max_digits):
        nd += k >= 10 ** d
    neg = (z < 0) & (k > 0)
    width = max_digits + 2  # [minus] digits... sep, right-aligned in a fixed-width row
    grid = np.full((n, width), -1, dtype=np.int64)
    pw = 10 ** np.arange(max_digits - 1, -1, -1, dtype=np.int64)  # most significant first
    digits = (k[:, None] // pw[None, :]) % 10  # [n, max_digits]
    cols = np.arange(max_digits)[None, :]
    keep = cols >= (max_digits - nd)[:, None]
    grid[:, 1:1 + max_digits] = np.where(keep, digits + DIGIT_IDS[0], -1)
    grid[:, -1] = SEP_ID
    minus_col = max_digits - nd  # the column just before the first kept digit (shifted by the leading slot)
    grid[np.flatnonzero(neg), minus_col[neg]] = MINUS_ID
    flat = grid.reshape(-1)
    return flat[flat >= 0]


def value_ids(z: np.ndarray, precision: int, max_digits: int) -> list[int]:
    """:func:`value_array` as a list of ints."""
    return value_array(z, precision, max_digits).tolist()


PERIODS = (2, 3, 4, 5, 6, 7, 12, 13, 24, 26, 48, 52)
# calendar periods of the seasonal-profile series (weekly, monthly, quarterly, hourly, ... data), weighted
SEASONAL_PERIODS = (4, 6, 7, 12, 13, 24, 26, 52, 48, 5, 10, 14, 30, 36)
SEASONAL_WEIGHTS = (6, 2, 6, 14, 2, 6, 2, 10, 2, 1, 1, 1, 1, 1)


def _ar1(noise: np.ndarray, phi: float) -> np.ndarray:
    try:
        from scipy.signal import lfilter  # scipy comes with statsmodels, the [data] extra
    except ImportError as e:
        raise missing_extra("scipy", "data", "to synthesize the numeric LM's training series") from e

    return lfilter([1.0], [1.0, -phi], noise)


def _gp_kernel(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random composite kernel (KernelSynth-like) on n evenly spaced points of [0, 1]."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    d = t - t.T

    def one():
        kind = rng.choice(6, p=[0.2, 0.35, 0.1, 0.15, 0.1, 0.1])
        if kind == 0:  # RBF
            ls = rng.choice([0.02, 0.05, 0.1, 0.3, 1.0])
            return np.exp(-0.5 * (d / ls) ** 2)
        if kind == 1:  # periodic
            p = rng.choice(PERIODS) / n
            ls = rng.choice([0.5, 1.0, 2.0])
            return np.exp(-2.0 * np.sin(np.pi * np.abs(d) / p) ** 2 / ls ** 2)
        if kind == 2:  # linear
            c = rng.uniform(-0.5, 1.0)
            return (t - c) @ (t - c).T
        if kind == 3:  # rational quadratic
            ls, a = rng.choice([0.05, 0.1, 0.3]), rng.choice([0.1, 1.0, 10.0])
            return (1 + d ** 2 / (2 * a * ls ** 2)) ** (-a)
        if kind == 4:  # white noise
            return rng.choice([0.01, 0.1]) * np.eye(n)
        return np.full((n, n), rng.uniform(0.1, 1.0))  # constant

    k = one()
    for _ in range(rng.integers(0, 4)):
        k = k + one() if rng.random() < 0.5 else k * one()
    return k + 1e-6 * np.eye(n)


def _gp_draws(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """k draws [k, n] from one Gaussian process with a random composite kernel (one factorization for all)."""
    kern = _gp_kernel(rng, n)
    try:
        chol = np.linalg.cholesky(kern)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(kern)
        chol = v * np.sqrt(np.clip(w, 0, None))
    return (chol @ rng.standard_normal((n, k))).T


def _gp_series(rng: np.random.Generator, n: int) -> np.ndarray:
    """A draw from a Gaussian process with a random composite kernel (KernelSynth-like)."""
    return _gp_draws(rng, n, 1)[0]


def _structural_series(rng: np.random.Generator, n: int) -> np.ndarray:
    """Level + trend + seasonal sums + level shifts + random walk + noise, optionally multiplicative."""
    t = np.arange(n, dtype=np.float64)
    y = np.zeros(n)
    if rng.random() < 0.7:
        trend = rng.normal(0, 1.0 / n) * t
        if rng.random() < 0.3:
            trend += rng.normal(0, 1.0 / n ** 2) * (t - n / 2) ** 2
        y += trend
    for _ in range(rng.integers(0, 3)):
        p = float(rng.choice(PERIODS))
        amp = rng.uniform(0.1, 1.0)
        phase = rng.uniform(0, 2 * np.pi)
        y += amp * np.sin(2 * np.pi * t / p + phase)
        for h in range(2, 2 + rng.integers(0, 3)):
            y += amp * rng.uniform(0, 0.5) * np.sin(2 * np.pi * h * t / p + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.25:
        for _ in range(rng.integers(1, 3)):
            y[rng.integers(1, n):] += rng.normal(0, 0.7)
    if rng.random() < 0.35:
        y += np.cumsum(rng.normal(0, rng.uniform(0.02, 0.2), n))
    noise = rng.normal(0, rng.uniform(0.0, 0.3), n)
    if rng.random() < 0.3:  # AR(1) noise
        noise = _ar1(noise, rng.uniform(0.3, 0.95))
    y += noise
    if rng.random() < 0.15:
        y = np.exp(y / (np.std(y) + 1e-9) * 0.5)
    if rng.random() < 0.1:  # spikes
        idx = rng.integers(0, n, size=rng.integers(1, 4))
        y[idx] += rng.normal(0, 3 * (np.std(y) + 1e-3), size=idx.size)
    return y


def _profile(rng: np.random.Generator, p: int) -> np.ndarray:
    """One period's shape [p], zero mean, unit max |.|: harmonics, one or two peaks, or a smoothed random draw."""
    s = np.arange(p, dtype=np.float64)
    kind = rng.choice(3, p=[0.4, 0.35, 0.25])
    if kind == 0:
        y = np.zeros(p)
        for h in range(1, 1 + rng.integers(1, min(4, max(1, p // 2)) + 1)):
            y += rng.uniform(0.2, 1.0) / h * np.sin(2 * np.pi * h * s / p + rng.uniform(0, 2 * np.pi))
    elif kind == 1:  # peaks (epidemic / holiday seasons), circular distance to the peak
        y = np.zeros(p)
        for _ in range(rng.integers(1, 3)):
            c = rng.uniform(0, p)
            dist = np.minimum(np.abs(s - c), p - np.abs(s - c))
            w = rng.uniform(0.04, 0.25) * p
            y += rng.uniform(0.3, 1.0) * np.exp(-0.5 * (dist / w) ** rng.choice([2.0, 1.0]))
    else:
        y = rng.standard_normal(p)
        k = int(rng.integers(0, max(1, p // 4)))
        if k:
            ker = np.ones(2 * k + 1) / (2 * k + 1)
            y = np.convolve(np.concatenate([y[-k:], y, y[:k]]), ker, mode="valid")
    y = y - y.mean()
    return y / (np.max(np.abs(y)) + 1e-9)


def _seasonal_series(rng: np.random.Generator, n: int) -> np.ndarray:
    """A calendar-seasonal series: level (+ trend, + random walk) combined with a repeated within-period shape
    whose amplitude drifts from cycle to cycle, peaks that shift a little, noise (iid or AR), additive or
    multiplicative, sometimes clipped at zero (counts) or with a second period."""
    p = int(rng.choice(SEASONAL_PERIODS, p=np.asarray(SEASONAL_WEIGHTS) / sum(SEASONAL_WEIGHTS)))
    n = max(n, int(rng.uniform(2.2, 4.0) * p))  # at least two cycles
    t = np.arange(n, dtype=np.float64)
    prof = _profile(rng, p)
    n_cyc = n // p + 2
    amp = np.exp(np.cumsum(rng.normal(0, rng.choice([0.0, 0.05, 0.15, 0.3]), n_cyc)))
    shift = rng.normal(0, rng.choice([0.0, 0.0, 0.03, 0.08]) * p, n_cyc)
    phase0 = int(rng.integers(0, p))
    pos = t + phase0
    cyc = (pos // p).astype(np.int64)
    pp = (pos - shift[cyc]) % p
    i0 = np.floor(pp).astype(np.int64) % p
    fr = pp - np.floor(pp)
    season = (1 - fr) * prof[i0] + fr * prof[(i0 + 1) % p]
    season = season * np.interp(pos / p, np.arange(n_cyc) + 0.5, amp)
    if rng.random() < 0.15:  # a second, shorter period
        q = int(rng.choice([2, 3, 4, 7]))
        if q < p:
            season += rng.uniform(0.1, 0.5) * _profile(rng, q)[(t.astype(np.int64) + phase0) % q]
    level = np.zeros(n)
    if rng.random() < 0.6:
        level += rng.normal(0, 1.5) * t / n
    if rng.random() < 0.3:
        level += np.cumsum(rng.normal(0, rng.uniform(0.01, 0.1), n))
    if rng.random() < 0.1:
        level[rng.integers(1, n):] += rng.normal(0, 0.5)
    sig = rng.choice([0.0, 0.02, 0.05, 0.1, 0.2, 0.4], p=[0.1, 0.2, 0.25, 0.25, 0.12, 0.08])
    noise = rng.normal(0, sig, n)
    if rng.random() < 0.3:
        noise = _ar1(noise, rng.uniform(0.2, 0.8)) * math.sqrt(0.5)
    a = rng.uniform(0.3, 2.0)
    if rng.random() < 0.45:  # multiplicative: level x (1 + a x season) x noise, positive
        base = np.exp(0.5 * level)
        y = base * np.maximum(0.05, 1.0 + min(a, 0.9) * season) * np.exp(noise)
    else:
        y = level + a * season + noise
        if rng.random() < 0.2:
            y = np.maximum(y, np.quantile(y, rng.uniform(0.0, 0.3)))  # counts floor at zero
    return y


def _standardize(x: np.ndarray) -> np.ndarray:
    s = np.mean(np.abs(x - np.mean(x)))
    return (x - np.mean(x)) / (s if s > 1e-9 else 1.0)


def statsmodels_series() -> list[np.ndarray]:
    """Public-domain series bundled with statsmodels (no download), each 1-D float64 without NaN."""
    try:
        from statsmodels import datasets as d
    except ImportError as e:
        raise missing_extra("statsmodels", "data", "for the numeric LM's public-domain training series") from e

    out: list[np.ndarray] = []

    def add(x):
        x = np.asarray(x, dtype=np.float64)
        x = x[np.isfinite(x)]
        if x.size >= 24 and np.ptp(x) > 0:
            out.append(x)

    try:
        _statsmodels_sets(d, add)
    except Exception as e:  # a statsmodels/pandas version that reads a set differently: keep what was read
        log.warning("statsmodels datasets: %d series read, then %s: %s", len(out), type(e).__name__, e)
    return out


def _statsmodels_sets(d, add) -> None:
    co2 = d.co2.load_pandas().data["co2"].interpolate().to_numpy()
    add(co2)
    add(co2.reshape(-1)[: co2.size // 4 * 4].reshape(-1, 4).mean(1))  # monthly-ish
    add(d.sunspots.load_pandas().data["SUNACTIVITY"])
    add(d.nile.load_pandas().data["volume"])
    add(d.elnino.load_pandas().data.iloc[:, 1:].to_numpy().reshape(-1))
    macro = d.macrodata.load_pandas().data
    for c in macro.columns[2:]:
        add(macro[c])
    for c in d.danish_data.load_pandas().data.columns:
        add(d.danish_data.load_pandas().data[c])
    ii = d.interest_inflation.load_pandas().data
    add(ii["Dp"]), add(ii["R"])
    fert = d.fertility.load_pandas().data
    years = [c for c in fert.columns if c.isdigit()]
    for row in fert[years].to_numpy(dtype=np.float64):
        add(row)
    g = d.grunfeld.load_pandas().data
    for _, grp in g.groupby("firm"):
        for c in ("invest", "value", "capital"):
            add(grp.sort_values("year")[c])


@dataclass(frozen=True)
class CorpusConfig:
    """How training documents are drawn.

    ctx_tokens:     tokens per training row (documents are packed, each starting with <|endoftext|>).
    precisions:     digits after the (implicit) decimal point, drawn with ``precision_probs``.
    max_digits:     cap on digits per value (values beyond are clipped), = precision + 3 at most.
    p_statsmodels:  share of documents cut from statsmodels' bundled series.
    p_seasonal:     share of seasonal-profile series among the synthetic ones (the rest: GP / structural).
    p_mixup:        share of synthetic documents that are a TSMixup of 2-3 series (Chronos).
    min_len/max_len: values per synthetic series.
    """

    ctx_tokens: int = 512
    precisions: tuple[int, ...] = (2, 3)
    precision_probs: tuple[float, ...] = (0.75, 0.25)
    p_statsmodels: float = 0.15
    p_seasonal: float = 0.0
    p_mixup: float = 0.0
    min_len: int = 48
    max_len: int = 200

    @classmethod
    def from_dict(cls, d: dict) -> "CorpusConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})


class Corpus:
    """Endless stream of packed token rows [ctx_tokens] drawn with a seeded numpy Generator."""

    def __init__(self, cfg: CorpusConfig, seed: int, real: list[np.ndarray] | None = None):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.real = statsmodels_series() if real is None else real
        self._gp_pool: list[np.ndarray] = []

    def reseed(self, seed) -> None:
        self.rng = np.random.default_rng(seed)
        self._gp_pool = []

    def _synthetic(self, n: int) -> np.ndarray:
        rng, cfg = self.rng, self.cfg
        u = rng.random()
        if u < cfg.p_seasonal:
            return _seasonal_series(rng, n)
        if rng.random() < 0.5:
            if cfg.p_seasonal <= 0:  # the original corpus: one draw per kernel
                return _gp_series(rng, n)
            if not self._gp_pool:  # four draws per factorized kernel (their length: this n)
                self._gp_pool = list(_gp_draws(rng, n, 4))
            return self._gp_pool.pop()
        return _structural_series(rng, n)

    def series(self) -> np.ndarray:
        rng, cfg = self.rng, self.cfg
        if self.real and rng.random() < cfg.p_statsmodels:
            x = self.real[rng.integers(len(self.real))]
            n = int(rng.integers(min(24, x.size), min(cfg.max_len, x.size) + 1))
            s = int(rng.integers(0, x.size - n + 1))
            x = x[s:s + n]
            return -x if rng.random() < 0.1 else x
        n = int(rng.integers(cfg.min_len, cfg.max_len + 1))
        if rng.random() < cfg.p_mixup:  # TSMixup: a convex mixture of 2-3 standardized series
            k = int(rng.integers(2, 4))
            parts = [self._synthetic(n) for _ in range(k)]
            m = min(p.size for p in parts)
            w = rng.dirichlet(np.full(k, 1.5))
            x = np.sum([wi * _standardize(pi[:m]) for wi, pi in zip(w, parts)], axis=0)
        else:
            x = self._synthetic(n)
        return x * rng.uniform(0.1, 1000) + rng.normal(0, 10)

    def document(self) -> np.ndarray:
        rng, cfg = self.rng, self.cfg
        x = self.series()
        k = max(2, int(x.size * rng.uniform(0.5, 1.0)))  # the scaler sees a prefix, as a context
        m, q = _scaler(x[:k])
        p = int(rng.choice(cfg.precisions, p=cfg.precision_probs))
        return np.concatenate([[EOS_ID], value_array((x - m) / q, p, p + 3)])

    def rows(self, n_rows: int) -> np.ndarray:
        """[n_rows, ctx_tokens] int64 token ids."""
        out = np.empty((n_rows, self.cfg.ctx_tokens), dtype=np.int64)
        for r in range(n_rows):
            parts, have = [], 0
            while have < self.cfg.ctx_tokens:
                d = self.document()
                parts.append(d)
                have += d.size
            out[r] = np.concatenate(parts)[: self.cfg.ctx_tokens]
        return out


def decode_text(ids) -> str:
    """Token ids -> text (debugging)."""
    return "".join(TOKENS[i].replace(SPACE, " ") if i != EOS_ID else "|" for i in ids)


# corpus worker processes (spawned): one Corpus per process, each chunk seeded by (seed, chunk index)
_WORKER: dict = {}


def _worker_init(cfg: dict, seed: int) -> None:
    try:
        _WORKER["corpus"] = Corpus(CorpusConfig.from_dict(cfg), seed)
    except Exception as e:  # reported by the first chunk (a failing initializer would be restarted forever)
        _WORKER["error"] = e
    _WORKER["seed"] = seed


def _worker_rows(chunk: int, n_rows: int) -> np.ndarray:
    if "error" in _WORKER:
        raise _WORKER["error"]
    c: Corpus = _WORKER["corpus"]
    c.reseed([_WORKER["seed"], 1 + chunk])
    return c.rows(n_rows).astype(np.uint8)


class RowFeed:
    """Training rows from ``workers`` processes, drawn while the model trains.

    Each step takes the fresh rows that are ready (oldest first) and fills the rest of the batch with rows drawn
    at random from everything seen so far (a ring of ``keep`` rows), so a fast GPU never waits on the CPUs after
    the first batch; ``fresh``/``reused`` count the rows of each kind.
    """

    def __init__(self, cfg: CorpusConfig, seed: int, workers: int, chunk_rows: int = 32, keep: int = 400_000):
        import multiprocessing as mp

        self.cfg, self.seed, self.chunk_rows = cfg, seed, chunk_rows
        self.timeout_s = 120.0
        self.max_queue = 64 * chunk_rows
        self.pool = mp.get_context("spawn").Pool(workers, _worker_init, (asdict(cfg), seed))
        self.pending: list = []
        self.next_chunk = 0
        self.depth = 3 * workers
        self.ring = np.zeros((keep, cfg.ctx_tokens), dtype=np.uint8)
        self.n_ring = 0
        self.w = 0
        self.queue: list[np.ndarray] = []
        self.fresh = 0
        self.reused = 0
        self.rng = np.random.default_rng(seed + 777)
        self._fill()

    def _fill(self) -> None:
        queued = sum(len(q) for q in self.queue)  # workers pause while unread fresh rows pile up
        while len(self.pending) < self.depth and queued + len(self.pending) * self.chunk_rows < self.max_queue:
            self.pending.append(self.pool.apply_async(_worker_rows, (self.next_chunk, self.chunk_rows)))
            self.next_chunk += 1

    def _collect(self, block: bool) -> None:
        if block and not self.pending:
            self.max_queue = max(self.max_queue, 2 * sum(len(q) for q in self.queue) + self.chunk_rows)
            self._fill()
        if block and not any(r.ready() for r in self.pending):
            self.pending[0].wait(self.timeout_s)
            if not self.pending[0].ready():
                raise RuntimeError(f"the corpus workers gave no rows in {self.timeout_s:.0f} s; expected a chunk of "
                                   f"{self.chunk_rows} rows within seconds. Fix: check that statsmodels and scipy "
                                   "import there, or run with --workers 0.")
        done = [r for r in self.pending if r.ready()]
        self.pending = [r for r in self.pending if not r.ready()]
        for r in done:
            rows = r.get()
            self.queue.append(rows)
            idx = (self.w + np.arange(len(rows))) % len(self.ring)
            self.ring[idx] = rows
            self.w = int(idx[-1] + 1) % len(self.ring)
            self.n_ring = min(len(self.ring), self.n_ring + len(rows))
        self._fill()

    def batch(self, n: int) -> np.ndarray:
        self._collect(block=False)
        while self.n_ring < n:
            self._collect(block=True)
        out, have = [], 0
        while self.queue and have < n:
            q = self.queue[0]
            take = q[: n - have]
            out.append(take)
            have += len(take)
            if len(take) == len(q):
                self.queue.pop(0)
            else:
                self.queue[0] = q[len(take):]
        self.fresh += have
        if have < n:
            out.append(self.ring[self.rng.integers(0, self.n_ring, size=n - have)])
            self.reused += n - have
        return np.concatenate(out)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


# ----------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class TrainConfig:
    """Pretraining of the numeric LM (GPT-2 architecture).

    n_layer/n_embd/n_head: model size; n_positions: context in tokens (= corpus ctx_tokens).
    steps, batch_size, lr, warmup, weight_decay: AdamW with linear warmup and cosine decay to lr/10.
    threads: torch intra-op threads. seed: numpy corpus and torch init.
    device: ``cpu`` or ``cuda`` (bf16 autocast). workers: corpus processes (0: drawn in the training loop,
        deterministic).
    stop_at: stop after this many steps (the schedule still spans ``steps``); None = run all steps.
    max_wall_s: safety stop on wall time; the steps actually run are recorded (rebuild with stop_at=that).
    budget_s: wall budget of the training loop: the schedule's progress is max(step / steps, elapsed /
        budget_s), so the cosine decay ends when the budget does and training stops there (a GPU run).
    init: a ``train`` folder whose weights start this run (same shape; continued pretraining, e.g. on another
        corpus mix); its training facts are kept in this run's ``training.json`` (``init_facts``).
    """

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 512
    steps: int = 180
    batch_size: int = 8
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.05
    threads: int = 2
    seed: int = 0
    stop_at: int | None = None
    max_wall_s: float | None = None
    budget_s: float | None = None
    device: str = "cpu"
    workers: int = 0
    init: str | None = None
    corpus: CorpusConfig = field(default_factory=CorpusConfig)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["corpus"] = CorpusConfig.from_dict(d.get("corpus", {}))
        return cls(**kw)


def gpt2_config(cfg: TrainConfig):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB_SIZE, n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=EOS_ID, eos_token_id=EOS_ID,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)


def tiny_gpt2(cfg: TrainConfig):
    """A GPT-2 (pre-LN, learned positions, gelu-tanh, tied output embedding) in plain PyTorch whose
    ``state_dict`` has the names and layout of Hugging Face's ``GPT2LMHeadModel`` (Conv1D weights [in, out]),
    initialized as it is (normal 0.02, residual projections 0.02 / sqrt(2 n_layer)). ``forward(ids)`` -> logits;
    ``loss(ids)`` -> next-token cross entropy. Attention is torch's scaled_dot_product_attention (flash on a GPU).
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    d, h = cfg.n_embd, cfg.n_head
    if d % h:
        raise InputError(f"n_embd={d} is not a multiple of n_head={h}; expected n_embd % n_head == 0.")

    def conv1d(n_in, n_out, std):
        m = nn.Module()
        m.weight = nn.Parameter(torch.randn(n_in, n_out) * std)
        m.bias = nn.Parameter(torch.zeros(n_out))
        return m

    def affine(m, x):
        return torch.addmm(m.bias, x.reshape(-1, x.shape[-1]), m.weight).view(*x.shape[:-1], -1)

    proj_std = 0.02 / math.sqrt(2 * cfg.n_layer)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(d, eps=1e-5)
            self.attn = nn.Module()
            self.attn.c_attn = conv1d(d, 3 * d, 0.02)
            self.attn.c_proj = conv1d(d, d, proj_std)
            self.ln_2 = nn.LayerNorm(d, eps=1e-5)
            self.mlp = nn.Module()
            self.mlp.c_fc = conv1d(d, 4 * d, 0.02)
            self.mlp.c_proj = conv1d(4 * d, d, proj_std)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = affine(self.attn.c_attn, self.ln_1(x)).split(d, dim=-1)
            q, k, v = (t.view(B, T, h, d // h).transpose(1, 2) for t in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
            x = x + affine(self.attn.c_proj, a)
            return x + affine(self.mlp.c_proj, F.gelu(affine(self.mlp.c_fc, self.ln_2(x)), approximate="tanh"))

    class TinyGPT2(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = cfg
            self.transformer = nn.Module()
            self.transformer.wte = nn.Embedding(VOCAB_SIZE, d)
            self.transformer.wpe = nn.Embedding(cfg.n_positions, d)
            nn.init.normal_(self.transformer.wte.weight, std=0.02)
            nn.init.normal_(self.transformer.wpe.weight, std=0.02)
            self.transformer.h = nn.ModuleList(Block() for _ in range(cfg.n_layer))
            self.transformer.ln_f = nn.LayerNorm(d, eps=1e-5)

        def forward(self, ids):
            tr = self.transformer
            pos = torch.arange(ids.shape[1], device=ids.device)
            x = tr.wte(ids) + tr.wpe(pos)[None]
            for blk in tr.h:
                x = blk(x)
            return tr.ln_f(x) @ tr.wte.weight.T

        def loss(self, ids):
            logits = self(ids[:, :-1])
            return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    return TinyGPT2()


def save_weights(state: dict, folder: str | Path, shard_bytes: int = SHARD_BYTES) -> list[str]:
    """Write a state dict (HF GPT-2 names) as ``weights-K.safetensors`` shards of at most ``shard_bytes``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("weights-*.safetensors"):
        old.unlink()
    shards, cur, size = [], {}, 0
    for k, v in state.items():
        v = v.detach().to("cpu").contiguous()
        nb = v.numel() * v.element_size()
        if cur and size + nb > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k], size = v, size + nb
    shards.append(cur)
    names = []
    for i, sh in enumerate(shards):
        names.append(f"weights-{i}.safetensors")
        tmp = folder / (names[-1] + ".tmp")
        save_file(sh, str(tmp))
        tmp.replace(folder / names[-1])
    return names


def load_weights(folder: str | Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    files = sorted(Path(folder).glob("weights-*.safetensors"))
    if not files:
        raise InputError(f"{folder} holds no weights-*.safetensors; expected the output of "
                         "`python -m alignts.export.numeric_lm train`.")
    for f in files:
        out.update(load_file(str(f)))
    return out


def load_hf_model(hf_dir: str | Path):
    """The trained numeric LM as a transformers ``GPT2LMHeadModel`` (fp32, eval mode) from a ``train`` folder."""
    import torch
    from transformers import GPT2LMHeadModel

    hf_dir = Path(hf_dir)
    facts = json.loads((hf_dir / "training.json").read_text())
    cfg = TrainConfig.from_dict(facts["config"])
    model = GPT2LMHeadModel(gpt2_config(cfg))
    state = {k: v.to(torch.float32) for k, v in load_weights(hf_dir).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "lm_head.weight" and not k.endswith(".attn.bias")
               and not k.endswith(".attn.masked_bias")]
    if missing or unexpected:
        raise ValidationError(f"{hf_dir}: weights do not fit GPT-2 (missing {missing}, unexpected {unexpected}).")
    model.tie_weights()
    return model.eval()


def _device_name(device: str) -> str:
    import platform

    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, {os.cpu_count()} CPU cores)"
    return f"CPU {platform.machine()} ({os.cpu_count()} cores)"


def train(cfg: TrainConfig, hf_out: str | Path, log_every: int = 50, val_every: int = 250,
          save_every_s: float = 60.0) -> dict:
    """Pretrain and save weights + tokenizer + ``training.json`` at ``hf_out``; returns training facts."""
    import torch

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dev = torch.device(cfg.device)
    cuda = dev.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise InputError("device='cuda' was asked but torch sees no CUDA GPU; expected a CUDA build of torch "
                             "and a GPU. Fix: pass --device cpu.")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    hf_out = Path(hf_out)
    hf_out.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(cfg.corpus, cfg.seed)
    feed = RowFeed(cfg.corpus, cfg.seed, cfg.workers) if cfg.workers > 0 else None
    val = torch.from_numpy(Corpus(cfg.corpus, cfg.seed + 10_000, corpus.real).rows(32)).to(dev)
    model = tiny_gpt2(cfg)
    init_facts = None
    if cfg.init:
        model.load_state_dict({k: v.float() for k, v in load_weights(cfg.init).items()})
        init_facts = json.loads((Path(cfg.init) / "training.json").read_text())
        init_facts.pop("history", None)
        log.info("starting from %s (%s steps, %s tokens)", cfg.init, init_facts.get("steps_done"),
                 init_facts.get("tokens_seen"))
    model = model.to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("numeric LM: %d parameters on %s", n_params, _device_name(cfg.device))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95),
                            **({"fused": True} if cuda else {}))

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def lr_at(step, elapsed):
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        if cfg.budget_s:
            frac = max(frac, elapsed / cfg.budget_s)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    def val_loss():
        model.eval()
        with torch.no_grad(), autocast():
            losses = [model.loss(val[i:i + 8]).item() for i in range(0, len(val), 8)]
        model.train()
        return float(np.mean(losses))

    meta = {"n_params": n_params, "machine": _device_name(cfg.device), "argv": sys.argv[1:]}
    if init_facts is not None:
        meta["init_facts"] = init_facts
    history = []
    t0 = last_save = time.time()
    model.train()
    done = 0
    try:
        for step in range(cfg.steps):
            rows = feed.batch(cfg.batch_size) if feed is not None else corpus.rows(cfg.batch_size)
            x = torch.from_numpy(rows).to(dev, non_blocking=True).long()
            elapsed = time.time() - t0
            for g in opt.param_groups:
                g["lr"] = lr_at(step, elapsed)
            with autocast():
                loss = model.loss(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            done = step + 1
            if step % log_every == 0 or step == cfg.steps - 1:
                rec = {"step": step, "loss": round(loss.item(), 4), "lr": round(opt.param_groups[0]["lr"], 6),
                       "wall_s": round(time.time() - t0, 1)}
                if feed is not None:
                    rec.update(fresh_rows=feed.fresh, reused_rows=feed.reused)
                if step % val_every == 0 or step == cfg.steps - 1:
                    rec["val_loss"] = round(val_loss(), 4)
                history.append(rec)
                log.info("%s", rec)
            if time.time() - last_save > save_every_s:
                _save(model, hf_out, cfg, meta, time.time() - t0, history, done, feed)
                last_save = time.time()
            elapsed = time.time() - t0
            if (cfg.stop_at is not None and done >= cfg.stop_at) or (
                    cfg.max_wall_s is not None and elapsed > cfg.max_wall_s) or (
                    cfg.budget_s is not None and elapsed >= cfg.budget_s):
                log.warning("stopping after %d of %d steps (stop_at=%s, max_wall_s=%s, budget_s=%s)", done,
                            cfg.steps, cfg.stop_at, cfg.max_wall_s, cfg.budget_s)
                break
    finally:
        if feed is not None:
            feed.close()
    history.append({"step": done - 1, "val_loss": round(val_loss(), 4), "wall_s": round(time.time() - t0, 1)})
    return _save(model, hf_out, cfg, meta, time.time() - t0, history, done, feed)


def _save(model, hf_out: Path, cfg: TrainConfig, meta: dict, wall, history, done, feed) -> dict:
    import torch

    save_weights(model.state_dict(), hf_out)
    vals = [h["val_loss"] for h in history if "val_loss" in h]
    facts = {**meta, "wall_s": round(wall, 1), "final_val_loss": vals[-1] if vals else None,
             "steps_done": done, "tokens_seen": done * cfg.batch_size * cfg.n_positions, "history": history,
             "config": asdict(cfg), "torch": torch.__version__}
    if feed is not None:
        facts["rows_fresh"], facts["rows_reused"] = feed.fresh, feed.reused
        facts["unique_tokens"] = feed.fresh * cfg.n_positions
    else:
        facts["unique_tokens"] = facts["tokens_seen"]
    tmp = hf_out / "training.json.tmp"
    tmp.write_text(json.dumps(facts, indent=2))
    tmp.replace(hf_out / "training.json")
    return facts


# ----------------------------------------------------------------------------------------------- export
def export_assets(hf_dir: str | Path, out: str | Path = ASSET_DIR, dtypes: tuple[str, ...] = ("f16", "q8_0"),
                  command: str | None = None) -> Path:
    """Write the GGUF files (write_gguf) and an injective bundle manifest into ``out`` (the package data)."""
    import shutil

    from alignts.export.gguf_writer import write_gguf
    from alignts.runtime import manifest as mf

    hf_dir, out = Path(hf_dir), Path(out)
    facts = json.loads((hf_dir / "training.json").read_text())
    model = load_hf_model(hf_dir)
    cfg = facts["config"]
    gpu = str(cfg.get("device", "cpu")).startswith("cuda")
    command = command or (GPU_COMMAND if gpu else REBUILD_COMMAND)
    if not (hf_dir / "tokenizer.json").is_file():
        write_hf_tokenizer(hf_dir)
    with mf.bundle_writer(out, overwrite=True) as tmp:
        variants, names = [], []
        for dt in dtypes:
            name = f"numeric_lm-{dt}.gguf"
            write_gguf(model, tmp / name, dtype=dt, **gguf_vocab(),
                       metadata={"paradigm": "injective", "numeric_lm.seed": int(cfg["seed"])})
            names.append(name)
            chk = _gguf_max_diff(model, tmp / name, cfg)
            diff, scale = chk["max_abs_diff"], chk["max_abs_reference"]
            tol = None if scale is None else GGUF_REL_TOL[dt] * scale
            if diff is not None and diff > tol:
                raise ValidationError(f"{name}: llama.cpp logits differ from torch by {diff:.3g} (> {tol:.3g} = "
                                      f"{GGUF_REL_TOL[dt]} x max|logit| {scale:.3g}); the export is wrong.")
            log.info("%s: max |logit diff| %.3g (%.2g of max |logit|), max TV %.3g, mean KL %.2g", name, diff or 0,
                     (diff or 0) / (scale or 1), chk["max_tv"] or 0, chk["mean_kl"] or 0)
            variants.append(mf.Variant(name=f"gguf-{dt}", backend="gguf", dtype=dt, files=(name,),
                                       weight_bytes=(tmp / name).stat().st_size,
                                       validation={**chk, "tolerance": tol,
                                                   "relative_tolerance": GGUF_REL_TOL[dt],
                                                   "n_inputs": 1, "reference": "torch-fp32",
                                                   "what": "next-token logits (and distributions: max_tv = largest "
                                                           "total variation, mean_kl) along a 200-token corpus "
                                                           "row"},
                                       extra={"architecture": "gpt2", "n_ctx_train": cfg["n_positions"]}))
        shutil.copy(hf_dir / "tokenizer.json", tmp / "tokenizer.json")
        names.append("tokenizer.json")
        training = {"command": command, "python_command": _python_command(cfg, facts), "seed": cfg["seed"],
                    "wall_s": facts["wall_s"], "steps_done": facts.get("steps_done"),
                    "machine": facts.get("machine") or "2 shared CPU cores (torch threads 2), load from other jobs",
                    "n_params": facts["n_params"], "tokens_seen": facts["tokens_seen"],
                    "unique_tokens": facts.get("unique_tokens"), "final_val_loss": facts["final_val_loss"],
                    "config": cfg, "data": _data_note(cfg)}
        stages = _stages(facts)
        if len(stages) > 1:  # continued pretraining (--init): the totals over every stage
            training["stages"] = stages
            for k in ("steps_done", "tokens_seen", "unique_tokens", "wall_s"):
                vals = [st.get(k) for st in stages]
                training[k + "_total"] = None if None in vals else round(sum(vals), 1)
        if gpu:
            training["export_command"] = f"python -m alignts.export.numeric_lm export --hf-dir {hf_dir} --out {out}"
            training["note"] = ("trained on a wall budget (budget_s): the cosine schedule follows wall time and the "
                                "corpus workers race the GPU, so a rerun gives a model of the same recipe, not the "
                                "same bits")
        else:
            training["note"] = ("the schedule spans `steps`; the run stops after `steps_done` (--stop-at) when a wall "
                                "budget cut it")
        m = mf.Manifest(
            paradigm="injective", architecture="gpt2", files=mf.file_entries(tmp, names),
            variants=tuple(variants),
            config={"model": "numeric_lm", "n_ctx": cfg["n_positions"], "samples": 20, "temperature": 0.9,
                    "top_p": 0.9, "prefix_bos": True},
            codec=numeric_codec_settings(),
            limits={"max_context_tokens": cfg["n_positions"]},
            training=training,
            versions={"torch": facts.get("torch"), "transformers": __import__("transformers").__version__},
        )
        mf.write_manifest(tmp, m)
    out.chmod(0o755)  # package data: readable by every user (the bundle writer's temp folder is private)
    for f in out.iterdir():
        f.chmod(0o644)
    return out


def _stages(facts: dict) -> list[dict]:
    """The training stages behind a ``train`` folder, first first (``init_facts`` chains earlier runs)."""
    out = []
    f = facts
    while f is not None:
        out.append({"python_command": _python_command(f["config"], f), "argv": f.get("argv"),
                    "machine": f.get("machine"), "steps_done": f.get("steps_done"), "tokens_seen": f.get("tokens_seen"),
                    "unique_tokens": f.get("unique_tokens"), "wall_s": f.get("wall_s"),
                    "final_val_loss": f.get("final_val_loss"), "data": _data_note(f["config"])})
        f = f.get("init_facts")
    return out[::-1]


def _data_note(cfg: dict) -> str:
    c = cfg.get("corpus", {})
    parts = ["synthetic KernelSynth-like GP + structural series"]
    if c.get("p_seasonal"):
        parts.append(f"seasonal-profile series ({c['p_seasonal']:.0%} of synthetic)")
    if c.get("p_mixup"):
        parts.append(f"TSMixup of 2-3 series ({c['p_mixup']:.0%})")
    parts.append(f"statsmodels bundled datasets ({c.get('p_statsmodels', 0.15):.0%})")
    return "; ".join(parts)


# Export check, relative to the largest |logit| of the torch reference: quantization error grows with the
# logits' scale, which training sharpens. A wrong export (a transposed or misordered tensor) is off by about the
# logits themselves. q8_0: llama.cpp quantizes the activations too (8-bit blocks of 32) and the 5 M model has
# outlier activation channels (max/median |activation| 56-276 at the MLP down-projections' inputs), so its q8_0 is
# off by 3-15 % of max |logit| (next-token total variation up to ~0.5 at single positions, mean KL 3e-3 to 9e-3)
# where f16 is off by ~0.15 %; validation records both measures (``max_tv``, ``mean_kl``).
GGUF_REL_TOL = {"f32": 1e-4, "f16": 5e-3, "q8_0": 2e-1, "q4_0": 3e-1}


def _gguf_max_diff(model, path: Path, cfg: dict | None = None) -> dict:
    """Torch vs llama.cpp next-token logits along one 200-token corpus row: {max_abs_diff, max_abs_reference,
    max_tv (largest total-variation distance of the next-token distributions), mean_kl}; values None without
    llama_cpp."""
    import torch

    try:
        from alignts.runtime.backends.gguf import LlamaCppModel
        ccfg = CorpusConfig.from_dict((cfg or {}).get("corpus", {})) if cfg else CorpusConfig()
        row = Corpus(CorpusConfig(ctx_tokens=256, precisions=ccfg.precisions,
                                  precision_probs=ccfg.precision_probs), 12345).rows(1)[0, :200]
        with LlamaCppModel(path, n_ctx=256, n_seq_max=1, n_threads=1) as m:
            got = np.stack([m.prefill(row[:1], 1)[0]] + [m.step([int(t)])[0] for t in row[1:]])
    except ImportError:
        log.warning("llama-cpp-python is not installed: %s is not validated against torch", path)
        return {"max_abs_diff": None, "max_abs_reference": None, "max_tv": None, "mean_kl": None}
    with torch.no_grad():
        ref = model(torch.from_numpy(row)[None]).logits[0].numpy().astype(np.float64)
    got = got.astype(np.float64)
    lp = ref - np.logaddexp.reduce(ref, axis=-1, keepdims=True)
    lq = got - np.logaddexp.reduce(got, axis=-1, keepdims=True)
    tv = 0.5 * np.abs(np.exp(lp) - np.exp(lq)).sum(-1)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    return {"max_abs_diff": float(np.max(np.abs(got - ref))), "max_abs_reference": float(np.max(np.abs(ref))),
            "max_tv": float(tv.max()), "mean_kl": float(kl.mean())}


def _python_command(cfg: dict, facts: dict) -> str:
    stop = facts.get("steps_done")
    c = cfg.get("corpus", {})
    verb = "train --hf-dir HF_DIR" if str(cfg.get("device", "cpu")) != "cpu" else "build"  # GPU: then export here
    cmd = (f"python -m alignts.export.numeric_lm {verb} --seed {cfg['seed']} --steps {cfg['steps']} "
           f"--batch {cfg['batch_size']} --width {cfg['n_embd']} --layers {cfg['n_layer']} --heads {cfg['n_head']} "
           f"--ctx {cfg['n_positions']} --lr {cfg['lr']} --warmup {cfg['warmup']} --threads {cfg['threads']}")
    if cfg.get("weight_decay", 0.05) != 0.05:
        cmd += f" --weight-decay {cfg['weight_decay']}"
    if c.get("p_seasonal") or c.get("p_mixup"):
        cmd += (f" --p-seasonal {c.get('p_seasonal', 0)} --p-mixup {c.get('p_mixup', 0)} "
                f"--min-len {c.get('min_len')} --max-len {c.get('max_len')}")
        if tuple(c.get("precision_probs", (0.75, 0.25))) != (0.75, 0.25):
            cmd += f" --p-precision3 {c['precision_probs'][1]}"
    if str(cfg.get("device", "cpu")) != "cpu":
        cmd += f" --device {cfg['device']}"
    if cfg.get("workers"):
        cmd += f" --workers {cfg['workers']}"
    if cfg.get("init"):
        cmd += f" --init {cfg['init']}"
    if cfg.get("budget_s"):
        cmd += f" --budget-minutes {cfg['budget_s'] / 60:g}"
    return cmd + (f" --stop-at {stop}" if stop is not None and stop < cfg["steps"] and not cfg.get("budget_s")
                  else "")


def numeric_codec_settings() -> dict:
    """LLMTime codec settings of the numeric LM (the ids are those of ``TOKENS``)."""
    return {"kind": "llmtime", "precision": 2, "alpha": 0.95, "beta": 0.3, "basic": False,
            "value_sep": VALUE_SEP, "digit_sep": "", "max_digits": 5, "tokenizer": "tokenizer.json"}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m alignts.export.numeric_lm")
    p.add_argument("what", choices=["build", "train", "export", "sample"],
                   help="build = train + export; train needs torch + safetensors only (a GPU machine); export "
                        "needs transformers + gguf (+ llama-cpp-python to validate)")
    p.add_argument("--hf-dir", default="build/numeric_lm/hf", help="where the trained weights go")
    p.add_argument("--out", default=str(ASSET_DIR))
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--width", type=int, default=TrainConfig.n_embd)
    p.add_argument("--layers", type=int, default=TrainConfig.n_layer)
    p.add_argument("--heads", type=int, default=TrainConfig.n_head)
    p.add_argument("--ctx", type=int, default=TrainConfig.n_positions)
    p.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--warmup", type=int, default=TrainConfig.warmup)
    p.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    p.add_argument("--stop-at", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="safety stop (the schedule follows --steps)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="wall budget of the training loop: the cosine schedule follows wall time and ends there")
    p.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast)")
    p.add_argument("--workers", type=int, default=0, help="corpus processes (0: in the training loop, seeded)")
    p.add_argument("--init", default=None, help="a train folder whose weights start this run (same model shape)")
    p.add_argument("--p-seasonal", type=float, default=CorpusConfig.p_seasonal)
    p.add_argument("--p-mixup", type=float, default=CorpusConfig.p_mixup)
    p.add_argument("--p-precision3", type=float, default=0.25, help="share of documents at precision 3 (else 2)")
    p.add_argument("--min-len", type=int, default=CorpusConfig.min_len)
    p.add_argument("--max-len", type=int, default=CorpusConfig.max_len)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig(n_layer=a.layers, n_embd=a.width, n_head=a.heads, n_positions=a.ctx, steps=a.steps,
                      batch_size=a.batch, seed=a.seed, threads=a.threads, lr=a.lr, warmup=a.warmup,
                      weight_decay=a.weight_decay, stop_at=a.stop_at,
                      max_wall_s=None if a.max_minutes is None else a.max_minutes * 60,
                      budget_s=None if a.budget_minutes is None else a.budget_minutes * 60,
                      device=a.device, workers=a.workers, init=a.init,
                      corpus=CorpusConfig(ctx_tokens=a.ctx, p_seasonal=a.p_seasonal, p_mixup=a.p_mixup,
                                          precision_probs=(1 - a.p_precision3, a.p_precision3),
                                          min_len=a.min_len, max_len=a.max_len))
    if a.what == "sample":
        c = Corpus(cfg.corpus, a.seed)
        for _ in range(3):
            print(decode_text(c.document())[:300])
        return 0
    if a.what in ("build", "train"):
        train(cfg, a.hf_dir)
    if a.what in ("build", "export"):
        export_assets(a.hf_dir, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
