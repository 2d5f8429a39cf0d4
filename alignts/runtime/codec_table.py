"""Find the LLMTime codec table (digit, separator and minus token ids) in any causal LM's vocabulary.

Sources: a GGUF model (its vocabulary read from the file with gguf-py, then llama.cpp's tokenizer once the
model is loaded) or a Hugging Face ``tokenizer.json`` (the ``tokenizers`` library; no transformers).

Two layouts (DESIGN.md, LLMTime):
- tokenizers that split digits (LLaMA, the embedded numeric LM): values are digit runs, no digit separator:
  ``"123 ,456 ,"``;
- tokenizers that merge digit runs (GPT-2 byte-level BPE): digits must be separated by a space,
  ``" 1 2 3 , 4 5 6 ,"``. Where the vocabulary has single tokens for space+digit (GPT-2's ``Ġ1``), those are
  the digit ids and no separate space token is needed: the ids are then the canonical tokenization of that
  text. Otherwise the digit ids are the bare digits with the space token as ``digit_sep``.

The table is checked by tokenizing a probe text with the model's own tokenizer: the ids the codec writes must
decode to the same values. A vocabulary without digit tokens raises :class:`CodecError` naming what is missing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from alignts.errors import ArtifactError, CodecError
from alignts.kernels.digits import CodecTable, decode_digits, encode_digits

log = logging.getLogger(__name__)

_EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|im_end|>", "<|end_of_text|>", "<|eot_id|>")
_BOS_NAMES = ("<s>", "<bos>", "<|begin_of_text|>", "<|endoftext|>")
_BYTE_SPACE = "\u0120"   # byte-level BPE's picture of " "
_SPM_SPACE = "\u2581"    # SentencePiece's picture of " "


@dataclass(frozen=True)
class CodecSettings:
    """LLMTime codec settings, stored in a bundle manifest's ``codec``.

    precision:  digits kept after the (implicit) decimal point of scaled values.
    alpha, beta, basic: the LLMTime scaler (fit per series on its context).
    value_sep:  text written after each value (``" ,"``).
    digit_sep:  text between digits (``" "`` for tokenizers that merge digit runs, ``""`` otherwise).
    max_digits: most digits a generated value may have (the sampler forces a separator after them).
    prefix_bos: start the prompt with the BOS (or EOS) token, as the model saw in pretraining.
    """

    precision: int = 3
    alpha: float = 0.95
    beta: float = 0.3
    basic: bool = False
    value_sep: str = " ,"
    digit_sep: str = ""
    max_digits: int = 6
    prefix_bos: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "llmtime", **asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CodecSettings":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class VocabInfo:
    """What the codec table was built from (kept in the manifest for ``alignts inspect``)."""

    source: str
    digits_merge: bool
    space_digit_tokens: bool
    bos_id: int | None
    eos_id: int | None
    n_vocab: int
    digit_pieces: tuple[str, ...]
    value_sep_pieces: tuple[str, ...]
    minus_piece: str


class Vocab:
    """A vocabulary the codec table can be found in: ``tokenize(text) -> ids``, ``piece(id) -> text``."""

    source = "?"

    def __init__(self, tokenize: Callable[[str], Sequence[int]], piece: Callable[[int], str], n_vocab: int,
                 eos_id: int | None, bos_id: int | None, source: str):
        self.tokenize = lambda text: [int(i) for i in tokenize(text)]
        self.piece = piece
        self.n_vocab = int(n_vocab)
        self.eos_id = eos_id
        self.bos_id = bos_id
        self.source = source


def hf_vocab(path: str | os.PathLike, tokenizer_config: str | os.PathLike | bool | None = True) -> Vocab:
    """Vocabulary of a Hugging Face ``tokenizer.json`` (or a folder holding one) through ``tokenizers``.

    tokenizer_config: where its special tokens are: True = ``tokenizer_config.json`` beside it (a model folder),
    a path (a bundle's verified file), or None (none: a bundle that lists no such file).
    """
    from tokenizers import Tokenizer

    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise ArtifactError(f"no tokenizer.json at {str(p)!r}; expected a Hugging Face model folder with a fast "
                            "tokenizer (tokenizer.json). Fix: save it with tokenizer.save_pretrained(folder).")
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises plain Exceptions
        raise ArtifactError(f"{p}: not a readable tokenizer.json ({e}); expected a `tokenizers` JSON file. "
                            "Fix: re-save the tokenizer.") from e
    cfg: dict[str, Any] = {}
    config = folder / "tokenizer_config.json" if tokenizer_config is True else tokenizer_config
    if config and Path(config).is_file():
        try:
            cfg = json.loads(Path(config).read_text())
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError: no special tokens from it
            cfg = {}
        cfg = cfg if isinstance(cfg, dict) else {}

    def special(key: str, names: tuple[str, ...]) -> int | None:
        v = cfg.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        for name in ((v,) if isinstance(v, str) else ()) + names:
            i = tok.token_to_id(name)
            if i is not None:
                return int(i)
        return None

    eos = special("eos_token", _EOS_NAMES)
    bos = special("bos_token", _BOS_NAMES)
    return Vocab(lambda t: tok.encode(t, add_special_tokens=False).ids,
                 lambda i: tok.decode([int(i)], skip_special_tokens=False), tok.get_vocab_size(),
                 eos, bos, f"tokenizer.json {p}")


def llama_vocab(model) -> Vocab:
    """Vocabulary of a loaded ``LlamaCppModel`` through llama.cpp's own tokenizer."""
    bos = None
    try:  # llama-cpp-python's vocab API; the backend exposes eos_id only
        b = int(model._L.llama_vocab_bos(model._vocab))
        bos = b if 0 <= b < model.n_vocab else None
    except AttributeError:
        pass
    return Vocab(lambda t: model.tokenize(t, add_special=False).tolist(), model.token_piece, model.n_vocab,
                 int(model.eos_id) if model.eos_id >= 0 else None, bos, f"llama.cpp {model.path}")


def gguf_token_list(path: str | os.PathLike) -> list[str]:
    """The ``tokenizer.ggml.tokens`` of a GGUF file, from the (cached) header parse of :func:`check_gguf`."""
    from alignts.runtime.gguf_check import check_gguf

    tokens = check_gguf(path).tokens
    if not tokens:
        raise CodecError(f"{path}: the GGUF has no tokenizer.ggml.tokens; expected a vocabulary with digit, "
                         "separator and minus tokens. Fix: export the GGUF with its tokenizer.")
    return list(tokens)


def _piece_text(piece: str) -> str:
    return piece.replace(_BYTE_SPACE, " ").replace(_SPM_SPACE, " ")


def precheck_token_list(tokens: Sequence[str], where: str) -> None:
    """Raise CodecError unless the vocabulary holds every digit, a comma and a minus sign (as token text)."""
    texts = {_piece_text(t).strip() for t in tokens}
    missing = [c for c in "0123456789,-" if c not in texts]
    if missing:
        raise CodecError(f"{where}: the vocabulary has no token for {' '.join(repr(c) for c in missing)}; the "
                         "Injective codec needs the ten digits, ',' and '-' as tokens (alone or after a "
                         "space). Fix: use a causal LM whose tokenizer has them (GPT-2, LLaMA-family, or the "
                         "embedded numeric LM).")


def _strip_prefix(vocab: Vocab, ids: list[int]) -> list[int]:
    """Drop leading tokens that decode to whitespace only (SentencePiece's dummy prefix)."""
    k = 0
    while k < len(ids) and vocab.piece(ids[k]).strip() == "":
        k += 1
    return ids[k:]


def _single(vocab: Vocab, text: str) -> int | None:
    ids = vocab.tokenize(text)
    return ids[0] if len(ids) == 1 else None


def build_codec_table(vocab: Vocab, value_sep: str = " ,", end_ids: Sequence[int] | None = None
                      ) -> tuple[CodecTable, str, VocabInfo]:
    """Find the codec table in ``vocab``; returns (table, digit_sep text, facts).

    Raises CodecError when a digit, the separator or the minus sign has no token.
    """
    precheck_token_list([vocab.piece(i) for i in range(vocab.n_vocab)], vocab.source)
    run = _strip_prefix(vocab, vocab.tokenize("0123456789"))
    split = len(run) == 10 and all(vocab.piece(i).strip() == str(d) for d, i in enumerate(run))
    if split:
        digit_ids, digit_sep_ids, digit_sep, space_digits = run, [], "", False
    else:
        spaced = [_single(vocab, f" {d}") for d in range(10)]
        if all(i is not None for i in spaced) and all(vocab.piece(i).strip() == str(d) for d, i in enumerate(spaced)):
            digit_ids, digit_sep_ids, digit_sep, space_digits = spaced, [], " ", True
        else:
            bare = [_single(vocab, str(d)) for d in range(10)]
            space = _single(vocab, " ")
            lost = [str(d) for d, i in enumerate(bare) if i is None]
            if lost or space is None:
                what = (f"single tokens for digits {lost}" if lost else "a token for ' ' (the digit separator)")
                raise CodecError(f"{vocab.source}: the tokenizer merges digit runs and has no {what}; expected "
                                 "one token per digit (alone or after a space). Fix: use a causal LM with digit "
                                 "tokens (GPT-2, LLaMA-family, or the embedded numeric LM).")
            digit_ids, digit_sep_ids, digit_sep, space_digits = bare, [space], " ", False
    if len(set(digit_ids)) != 10:
        raise CodecError(f"{vocab.source}: digit tokens {digit_ids} are not 10 distinct ids.")

    # value separator: the ids between two digits in "1 ,2" (" 1 , 2" in the spaced layout)
    d1, d2 = digit_ids[1], digit_ids[2]
    probe = (f" 1{value_sep} 2" if space_digits else f"1{value_sep}2") if digit_sep else f"1{value_sep}2"
    ids = _strip_prefix(vocab, vocab.tokenize(probe))
    if len(ids) < 3 or ids[0] != d1 or ids[-1] != d2:
        raise CodecError(f"{vocab.source}: cannot find the value separator {value_sep!r}: {probe!r} tokenizes "
                         f"as {[vocab.piece(i) for i in ids]}; expected digit, separator, digit. Fix: pass "
                         "another value separator (e.g. ',').")
    vsep = ids[1:-1]
    vsep = [i for i in vsep if i not in digit_sep_ids] or vsep
    # minus sign: the token after the separator in "1 ,-2" when it tokenizes that way, else "-" / " -" alone
    probe = (f" 1{value_sep} - 2" if space_digits else f"1{value_sep}-2")
    ids = _strip_prefix(vocab, vocab.tokenize(probe))
    minus = None
    if len(ids) == len(vsep) + 3 and ids[1:1 + len(vsep)] == vsep and ids[-1] == d2:
        minus = ids[-2]
    for cand in ((" -", "-") if space_digits else ("-", " -")):
        if minus is None:
            minus = _single(vocab, cand)
    if minus is None or vocab.piece(minus).strip() != "-":
        raise CodecError(f"{vocab.source}: no single token for the minus sign '-'; expected one. Fix: use a "
                         "causal LM whose vocabulary has '-' as a token.")
    ends = tuple(end_ids) if end_ids is not None else ((vocab.eos_id,) if vocab.eos_id is not None else ())
    ends = tuple(i for i in ends if i not in set(digit_ids) | set(vsep) | set(digit_sep_ids) | {minus})
    try:
        table = CodecTable(digit_ids=tuple(digit_ids), value_sep=tuple(vsep), digit_sep=tuple(digit_sep_ids),
                           minus_id=int(minus), end_ids=ends)
    except CodecError as e:
        raise CodecError(f"{vocab.source}: {e}") from e
    info = VocabInfo(source=vocab.source, digits_merge=not split, space_digit_tokens=space_digits,
                     bos_id=vocab.bos_id, eos_id=vocab.eos_id, n_vocab=vocab.n_vocab,
                     digit_pieces=tuple(vocab.piece(i) for i in digit_ids),
                     value_sep_pieces=tuple(vocab.piece(i) for i in vsep), minus_piece=vocab.piece(minus))
    if not digit_sep_ids:  # canonical layouts: the model's own tokenizer must read the codec's text back
        _check_round_trip(vocab, table, digit_sep, value_sep, space_digits)
    log.info("codec table from %s: digits %s, value_sep %s, digit_sep %s, minus %d", vocab.source,
             table.digit_ids, table.value_sep, table.digit_sep, table.minus_id)
    return table, digit_sep, info


def serialize_text(values: np.ndarray, precision: int, value_sep: str, digit_sep: str, space_digits: bool) -> str:
    """The LLMTime text of scaled values [L] (what the codec's ids spell), for checks and debugging."""
    out = []
    for x in np.asarray(values, dtype=np.float64).reshape(-1):
        v = int(np.floor(abs(x) * 10 ** precision))
        sign = "-" if x < 0 else ""
        if space_digits:
            out.append(" " + " ".join(([sign] if sign else []) + list(str(v))) + value_sep)
        else:
            out.append(sign + digit_sep.join(str(v)) + value_sep)
    return "".join(out)


def _check_round_trip(vocab: Vocab, table: CodecTable, digit_sep: str, value_sep: str, space_digits: bool) -> None:
    """The model's tokenizer must read the codec's text as values that decode to the same numbers."""
    x = np.array([[0.0, 1.234, -5.6, 10.0, 987.654, 0.05]])
    ids, n = encode_digits(x, table, 3)
    text = serialize_text(x[0], 3, value_sep, digit_sep, space_digits)
    again = _strip_prefix(vocab, vocab.tokenize(text))
    got, n_got = decode_digits(np.asarray([again]), None, table, 3, x.shape[1])
    want, _ = decode_digits(ids, n, table, 3, x.shape[1])
    if int(n_got[0]) != x.shape[1] or not np.allclose(got, want):
        raise CodecError(f"{vocab.source}: the tokenizer reads {text!r} as {[vocab.piece(i) for i in again]}, "
                         f"which decodes to {got[0].tolist()} instead of {want[0].tolist()}; this vocabulary "
                         "does not fit the LLMTime codec. Fix: pass another --value-sep or model.")


def table_to_dict(table: CodecTable) -> dict[str, Any]:
    return {"digit_ids": list(table.digit_ids), "value_sep_ids": list(table.value_sep),
            "digit_sep_ids": list(table.digit_sep), "minus_id": int(table.minus_id),
            "end_ids": list(table.end_ids)}


def table_from_dict(d: Mapping[str, Any]) -> CodecTable:
    return CodecTable(digit_ids=tuple(d["digit_ids"]), value_sep=tuple(d["value_sep_ids"]),
                      digit_sep=tuple(d.get("digit_sep_ids", ())), minus_id=int(d["minus_id"]),
                      end_ids=tuple(d.get("end_ids", ())))
