"""Prompt text -> token ids with the `tokenizers` library over a backbone's ``tokenizer.json`` (no transformers).

The Bridging prompt-as-prefix is tokenized here both at training time and at run time, so the ids are
identical on both sides by construction.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np

from alignts.errors import ArtifactError, InputError, missing_extra

log = logging.getLogger(__name__)

# Tried in order for the id that left-pads prompts to a fixed length (BERT, GPT-2, LLaMA-family).
_PAD_CANDIDATES = ("[PAD]", "<pad>", "<|endoftext|>", "</s>", "<|end_of_text|>", "<unk>", "[UNK]")


class PromptTokenizer:
    """A ``tokenizers.Tokenizer`` loaded from a tokenizer.json, with padding/truncation switched off.

    encode(text) -> int64 ids [T] without special tokens; ``pad_id`` is the id used to left-pad prompts.
    Encodings are cached per text (LRU) because prompt segments repeat across calls.
    """

    def __init__(self, tokenizer_json: str | os.PathLike | bytes, cache_size: int = 4096):
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover - tokenizers is a core dependency
            raise missing_extra("tokenizers", "cpu") from e
        try:
            if isinstance(tokenizer_json, bytes):
                self._tok = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
                self.source = "<bytes>"
            else:
                p = Path(tokenizer_json)
                if not p.is_file():
                    raise ArtifactError(f"tokenizer file {str(p)!r} not found; expected the backbone bundle's "
                                        "tokenizer.json. Re-export the backbone bundle.")
                self._tok = Tokenizer.from_file(str(p))
                self.source = str(p)
        except ArtifactError:
            raise
        except Exception as e:  # tokenizers raises plain Exception subclasses on malformed JSON
            raise ArtifactError(f"cannot parse tokenizer.json ({type(e).__name__}: {e}); expected a Hugging Face "
                                "`tokenizers` JSON file. Re-export the backbone bundle.") from e
        # tokenizer.json files often carry padding/truncation settings (MiniLM: pad to 128); prompts need raw ids.
        self._tok.no_padding()
        self._tok.no_truncation()
        self.pad_id = self._find_pad_id()
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self._encode_cached = functools.lru_cache(maxsize=cache_size)(self._encode_uncached)

    def _find_pad_id(self) -> int:
        for tok in _PAD_CANDIDATES:
            i = self._tok.token_to_id(tok)
            if i is not None:
                return int(i)
        return 0

    def _encode_uncached(self, text: str) -> np.ndarray:
        ids = np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)
        ids.setflags(write=False)  # shared through the cache
        return ids

    def encode(self, text: str) -> np.ndarray:
        """Token ids [T] (int64, read-only) of ``text``, no special tokens added."""
        if not isinstance(text, str):
            raise InputError(f"prompt text must be str, got {type(text).__name__}; pass the prompt as text.")
        return self._encode_cached(text)

    def encode_segments(self, segments: list[str] | tuple[str, ...]) -> np.ndarray:
        """Ids of each segment tokenized on its own, concatenated [T] (segments cache independently)."""
        parts = [self.encode(s) for s in segments if s]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def cache_info(self):
        return self._encode_cached.cache_info()


def left_pad(ids: list[np.ndarray], length: int, pad_id: int) -> np.ndarray:
    """Stack ragged id rows into [S, length]: keep the first ``length`` ids of each row, pad on the left.

    Left padding keeps the prompt's last token next to the patch embeddings that follow it.
    """
    out = np.full((len(ids), length), pad_id, dtype=np.int64)
    for i, row in enumerate(ids):
        row = row[:length]
        if len(row):
            out[i, length - len(row):] = row
    return out
