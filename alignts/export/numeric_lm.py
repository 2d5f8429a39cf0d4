"""The embedded numeric LM of the Injective paradigm: a small GPT-2 pretrained on digit-serialized series.

Vocabulary (a real byte-level BPE layout, tokenizer model ``gpt2``, so that llama.cpp and the ``tokenizers``
library both read it): ``<|endoftext|>`` (bos/eos), the ten digits, ``,``, ``-``, ``Ġ`` (space) and the merge
``Ġ ,`` -> ``Ġ,``, the LLMTime value separator ``" ,"``. Digits are single tokens, so values need no digit
separator (as LLaMA-style tokenizers that split digits).

Corpus: synthetic series in the manner of Chronos' KernelSynth (Gaussian processes with random composite
kernels) plus structural series (seasonal sums, trends, level shifts, random walks, noise), and windows of the
public-domain series that statsmodels bundles. Each series is scaled with the LLMTime scaler fit on a random
prefix (as at forecast time, where it is fit on the context only) and serialized at precision 2 or 3.

Rebuild (seeded): ``scripts/build_numeric_lm`` (runs ``python -m alignts.export.numeric_lm build ...``): the
shipped model is 4 layers x width 128 (0.86 M parameters, context 512 tokens), 700 steps of batch 8 x 512
tokens (2.9 M tokens; 24 minutes on a shared 2-core machine). It is small and briefly trained
(results/injective_zero_shot.md); more steps (``--steps``) make a better one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from alignts.errors import ValidationError

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


def value_ids(z: np.ndarray, precision: int, max_digits: int) -> list[int]:
    """Token ids of scaled values: sign, digits of trunc(|z| 10^p) without leading zeros, then ``" ,"``.

    Truncation (not rounding) as LLMTime's serializer; the decoder adds half a bin.
    """
    cap = 10 ** max_digits - 1
    k = np.minimum(np.floor(np.abs(z) * 10 ** precision), cap).astype(np.int64)
    out: list[int] = []
    for neg, v in zip(z < 0, k):
        if neg and v > 0:
            out.append(MINUS_ID)
        out.extend(DIGIT_IDS[int(c)] for c in str(int(v)))
        out.append(SEP_ID)
    return out


PERIODS = (2, 3, 4, 5, 6, 7, 12, 13, 24, 26, 48, 52)


def _gp_series(rng: np.random.Generator, n: int) -> np.ndarray:
    """A draw from a Gaussian process with a random composite kernel (KernelSynth-like)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    d = t - t.T

    def one():
        kind = rng.integers(0, 6)
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
    k = k + 1e-6 * np.eye(n)
    try:
        chol = np.linalg.cholesky(k)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(k)
        chol = v * np.sqrt(np.clip(w, 0, None))
    return chol @ rng.standard_normal(n)


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
        phi = rng.uniform(0.3, 0.95)
        for i in range(1, n):
            noise[i] += phi * noise[i - 1]
    y += noise
    if rng.random() < 0.15:
        y = np.exp(y / (np.std(y) + 1e-9) * 0.5)
    if rng.random() < 0.1:  # spikes
        idx = rng.integers(0, n, size=rng.integers(1, 4))
        y[idx] += rng.normal(0, 3 * (np.std(y) + 1e-3), size=idx.size)
    return y


def statsmodels_series() -> list[np.ndarray]:
    """Public-domain series bundled with statsmodels (no download), each 1-D float64 without NaN."""
    from statsmodels import datasets as d

    out: list[np.ndarray] = []

    def add(x):
        x = np.asarray(x, dtype=np.float64)
        x = x[np.isfinite(x)]
        if x.size >= 24 and np.ptp(x) > 0:
            out.append(x)

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
    return out


@dataclass(frozen=True)
class CorpusConfig:
    """How training documents are drawn.

    ctx_tokens:     tokens per training row (documents are packed, each starting with <|endoftext|>).
    precisions:     digits after the (implicit) decimal point, drawn with ``precision_probs``.
    max_digits:     cap on digits per value (values beyond are clipped), = precision + 3 at most.
    p_statsmodels:  share of documents cut from statsmodels' bundled series.
    min_len/max_len: values per synthetic series.
    """

    ctx_tokens: int = 512
    precisions: tuple[int, ...] = (2, 3)
    precision_probs: tuple[float, ...] = (0.75, 0.25)
    p_statsmodels: float = 0.15
    min_len: int = 48
    max_len: int = 200


class Corpus:
    """Endless stream of packed token rows [ctx_tokens] drawn with a seeded numpy Generator."""

    def __init__(self, cfg: CorpusConfig, seed: int):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.real = statsmodels_series()

    def series(self) -> np.ndarray:
        rng, cfg = self.rng, self.cfg
        if rng.random() < cfg.p_statsmodels:
            x = self.real[rng.integers(len(self.real))]
            n = int(rng.integers(min(24, x.size), min(cfg.max_len, x.size) + 1))
            s = int(rng.integers(0, x.size - n + 1))
            x = x[s:s + n]
            return -x if rng.random() < 0.1 else x
        n = int(rng.integers(cfg.min_len, cfg.max_len + 1))
        x = _gp_series(rng, n) if rng.random() < 0.5 else _structural_series(rng, n)
        return x * rng.uniform(0.1, 1000) + rng.normal(0, 10)

    def document(self) -> list[int]:
        rng, cfg = self.rng, self.cfg
        x = self.series()
        k = max(2, int(x.size * rng.uniform(0.5, 1.0)))  # the scaler sees a prefix, as a context
        m, q = _scaler(x[:k])
        p = int(rng.choice(cfg.precisions, p=cfg.precision_probs))
        return [EOS_ID] + value_ids((x - m) / q, p, p + 3)

    def rows(self, n_rows: int) -> np.ndarray:
        """[n_rows, ctx_tokens] int64 token ids."""
        out = np.empty((n_rows, self.cfg.ctx_tokens), dtype=np.int64)
        for r in range(n_rows):
            row: list[int] = []
            while len(row) < self.cfg.ctx_tokens:
                row.extend(self.document())
            out[r] = row[: self.cfg.ctx_tokens]
        return out


def decode_text(ids) -> str:
    """Token ids -> text (debugging)."""
    return "".join(TOKENS[i].replace(SPACE, " ") if i != EOS_ID else "|" for i in ids)


# ----------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class TrainConfig:
    """Pretraining of the numeric LM (GPT-2 architecture).

    n_layer/n_embd/n_head: model size; n_positions: context in tokens (= corpus ctx_tokens).
    steps, batch_size, lr, warmup, weight_decay: AdamW with linear warmup and cosine decay to lr/10.
    threads: torch intra-op threads. seed: numpy corpus and torch init.
    stop_at: stop after this many steps (the schedule still spans ``steps``); None = run all steps.
    max_wall_s: safety stop on wall time; the steps actually run are recorded (rebuild with stop_at=that).
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
    corpus: CorpusConfig = field(default_factory=CorpusConfig)


def gpt2_config(cfg: TrainConfig):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=VOCAB_SIZE, n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=EOS_ID, eos_token_id=EOS_ID,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)


def train(cfg: TrainConfig, hf_out: str | Path, log_every: int = 10, val_every: int = 50) -> dict:
    """Pretrain and save a Hugging Face folder (model + tokenizer) at ``hf_out``; returns training facts."""
    import torch
    from tqdm import tqdm
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    corpus = Corpus(cfg.corpus, cfg.seed)
    val = torch.from_numpy(Corpus(cfg.corpus, cfg.seed + 10_000).rows(32))
    model = GPT2LMHeadModel(gpt2_config(cfg))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("numeric LM: %d parameters", n_params)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def val_loss():
        model.eval()
        with torch.no_grad():
            losses = [model(input_ids=val[i:i + 8], labels=val[i:i + 8]).loss.item() for i in range(0, len(val), 8)]
        model.train()
        return float(np.mean(losses))

    history = []
    t0 = time.time()
    model.train()
    bar = tqdm(range(cfg.steps), desc="numeric LM", mininterval=30)
    for step in bar:
        x = torch.from_numpy(corpus.rows(cfg.batch_size))
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == cfg.steps - 1:
            rec = {"step": step, "loss": round(loss.item(), 4), "wall_s": round(time.time() - t0, 1)}
            if step % val_every == 0 or step == cfg.steps - 1:
                rec["val_loss"] = round(val_loss(), 4)
            history.append(rec)
            log.info("%s", rec)
            bar.set_postfix(loss=rec["loss"])
        done = step + 1
        if step % val_every == 0 and step:
            _save(model, hf_out, cfg, n_params, time.time() - t0, history, done, torch.__version__)
        if (cfg.stop_at is not None and done >= cfg.stop_at) or (
                cfg.max_wall_s is not None and time.time() - t0 > cfg.max_wall_s):
            log.warning("stopping after %d of %d steps (stop_at=%s, max_wall_s=%s)", done, cfg.steps,
                        cfg.stop_at, cfg.max_wall_s)
            break
    history.append({"step": done - 1, "val_loss": round(val_loss(), 4), "wall_s": round(time.time() - t0, 1)})
    return _save(model, hf_out, cfg, n_params, time.time() - t0, history, done, torch.__version__)


def _save(model, hf_out, cfg: TrainConfig, n_params, wall, history, done, torch_version) -> dict:
    hf_out = Path(hf_out)
    model.save_pretrained(hf_out, safe_serialization=True)
    write_hf_tokenizer(hf_out)
    vals = [h["val_loss"] for h in history if "val_loss" in h]
    facts = {"n_params": n_params, "wall_s": round(wall, 1), "final_val_loss": vals[-1] if vals else None,
             "steps_done": done, "tokens_seen": done * cfg.batch_size * cfg.n_positions, "history": history,
             "config": asdict(cfg), "torch": torch_version}
    (hf_out / "training.json").write_text(json.dumps(facts, indent=2))
    return facts


# ----------------------------------------------------------------------------------------------- export
def export_assets(hf_dir: str | Path, out: str | Path = ASSET_DIR, dtypes: tuple[str, ...] = ("f16", "q8_0"),
                  command: str = REBUILD_COMMAND) -> Path:
    """Write the GGUF files (write_gguf) and an injective bundle manifest into ``out`` (the package data)."""
    import shutil

    from transformers import GPT2LMHeadModel

    from alignts.export.gguf_writer import write_gguf
    from alignts.runtime import manifest as mf

    hf_dir, out = Path(hf_dir), Path(out)
    facts = json.loads((hf_dir / "training.json").read_text())
    model = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    cfg = facts["config"]
    with mf.bundle_writer(out, overwrite=True) as tmp:
        variants, names = [], []
        for dt in dtypes:
            name = f"numeric_lm-{dt}.gguf"
            write_gguf(model, tmp / name, dtype=dt, **gguf_vocab(),
                       metadata={"paradigm": "injective", "numeric_lm.seed": int(cfg["seed"])})
            names.append(name)
            diff, scale = _gguf_max_diff(model, tmp / name)
            tol = None if scale is None else GGUF_REL_TOL[dt] * scale
            if diff is not None and diff > tol:
                raise ValidationError(f"{name}: llama.cpp logits differ from torch by {diff:.3g} (> {tol:.3g} = "
                                      f"{GGUF_REL_TOL[dt]} x max|logit| {scale:.3g}); the export is wrong.")
            variants.append(mf.Variant(name=f"gguf-{dt}", backend="gguf", dtype=dt, files=(name,),
                                       weight_bytes=(tmp / name).stat().st_size,
                                       validation={"max_abs_diff": diff, "tolerance": tol,
                                                   "relative_tolerance": GGUF_REL_TOL[dt], "max_abs_reference": scale,
                                                   "n_inputs": 1, "reference": "torch-fp32",
                                                   "what": "next-token logits along a 200-token corpus row"},
                                       extra={"architecture": "gpt2", "n_ctx_train": cfg["n_positions"]}))
        shutil.copy(hf_dir / "tokenizer.json", tmp / "tokenizer.json")
        names.append("tokenizer.json")
        m = mf.Manifest(
            paradigm="injective", architecture="gpt2", files=mf.file_entries(tmp, names),
            variants=tuple(variants),
            config={"model": "numeric_lm", "n_ctx": cfg["n_positions"], "samples": 20, "temperature": 0.9,
                    "top_p": 0.9, "prefix_bos": True},
            codec=numeric_codec_settings(),
            limits={"max_context_tokens": cfg["n_positions"]},
            training={"command": command, "python_command": _python_command(cfg, facts), "seed": cfg["seed"],
                      "wall_s": facts["wall_s"], "steps_done": facts.get("steps_done"),
                      "machine": "2 shared CPU cores (torch threads 2), load from other jobs",
                      "n_params": facts["n_params"], "tokens_seen": facts["tokens_seen"],
                      "final_val_loss": facts["final_val_loss"], "config": cfg,
                      "data": "synthetic KernelSynth-like + structural series; statsmodels bundled datasets",
                      "note": "the schedule spans `steps`; the run stops after `steps_done` (--stop-at), the count "
                              "the original run reached in its 32-minute wall budget on a shared 2-core machine"},
            versions={"torch": facts.get("torch"), "transformers": __import__("transformers").__version__},
        )
        mf.write_manifest(tmp, m)
    out.chmod(0o755)  # package data: readable by every user (the bundle writer's temp folder is private)
    for f in out.iterdir():
        f.chmod(0o644)
    return out


# Export check, relative to the largest |logit| of the torch reference: quantization error grows with the
# logits' scale, which training sharpens.
GGUF_REL_TOL = {"f32": 1e-4, "f16": 5e-3, "q8_0": 3e-2, "q4_0": 1e-1}


def _gguf_max_diff(model, path: Path) -> tuple[float, float] | tuple[None, None]:
    """(max |logits| difference between torch and llama.cpp over one corpus row, max |torch logit|);
    (None, None) without llama_cpp."""
    import torch

    try:
        from alignts.runtime.backends.gguf import LlamaCppModel
        row = Corpus(CorpusConfig(), 12345).rows(1)[0, :200]
        with LlamaCppModel(path, n_ctx=256, n_seq_max=1, n_threads=1) as m:
            got = [m.prefill(row[:1], 1)[0]] + [m.step([int(t)])[0] for t in row[1:]]
    except ImportError:
        log.warning("llama-cpp-python is not installed: %s is not validated against torch", path)
        return None, None
    with torch.no_grad():
        ref = model(torch.from_numpy(row)[None]).logits[0].numpy()
    return float(np.max(np.abs(np.stack(got) - ref))), float(np.max(np.abs(ref)))


def _python_command(cfg: dict, facts: dict) -> str:
    stop = facts.get("steps_done")
    cmd = (f"python -m alignts.export.numeric_lm build --seed {cfg['seed']} --steps {cfg['steps']} "
           f"--batch {cfg['batch_size']} --width {cfg['n_embd']} --layers {cfg['n_layer']} --ctx {cfg['n_positions']} "
           f"--lr {cfg['lr']} --warmup {cfg['warmup']} --threads {cfg['threads']}")
    return cmd + (f" --stop-at {stop}" if stop is not None and stop < cfg["steps"] else "")


def numeric_codec_settings() -> dict:
    """LLMTime codec settings of the numeric LM (the ids are those of ``TOKENS``)."""
    return {"kind": "llmtime", "precision": 2, "alpha": 0.95, "beta": 0.3, "basic": False,
            "value_sep": VALUE_SEP, "digit_sep": "", "max_digits": 5, "tokenizer": "tokenizer.json"}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m alignts.export.numeric_lm")
    p.add_argument("what", choices=["build", "train", "export", "sample"])
    p.add_argument("--hf-dir", default="build/numeric_lm/hf", help="where the trained HF folder goes")
    p.add_argument("--out", default=str(ASSET_DIR))
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--width", type=int, default=TrainConfig.n_embd)
    p.add_argument("--layers", type=int, default=TrainConfig.n_layer)
    p.add_argument("--ctx", type=int, default=TrainConfig.n_positions)
    p.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--warmup", type=int, default=TrainConfig.warmup)
    p.add_argument("--stop-at", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = TrainConfig(n_layer=a.layers, n_embd=a.width, n_positions=a.ctx, steps=a.steps, batch_size=a.batch,
                      seed=a.seed, threads=a.threads, lr=a.lr, warmup=a.warmup, stop_at=a.stop_at,
                      max_wall_s=None if a.max_minutes is None else a.max_minutes * 60,
                      corpus=CorpusConfig(ctx_tokens=a.ctx))
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
