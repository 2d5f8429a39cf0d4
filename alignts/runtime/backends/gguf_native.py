"""llama.cpp decode steps from compiled code: the functions numba calls and what it needs to call them.

A decode step of a small LM is a fraction of a millisecond of llama.cpp (the shipped numeric LM: ~0.2-0.6 ms on
one core), and a Python step around it (stage the tokens, call llama_decode through ctypes, find the logits, run
the sampler's kernel) cost ~50 us on an Intel Xeon where the same code in a warm microbenchmark costs ~10: between
two decodes llama.cpp's weights push the interpreter's code and data out of the caches. A loop compiled by numba
does the same work in a few microseconds and releases the GIL for the whole generation.

llama_decode takes its batch by value (a 56-byte struct), which numba cannot pass; alignts' llama.cpp build
exports ``alignts_llama_decode(ctx, const llama_batch *)`` (scripts/patch_llama.py change 9). A stock build
lacks it: :func:`native_functions` returns None and callers step in Python.

The functions are ctypes objects declared with integer addresses (``c_size_t``) so that numba calls them with
plain integers; they reach the compiled code as arguments, so the compiled code keeps no address and stays in
numba's on-disk cache.
"""

from __future__ import annotations

import ctypes
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from alignts.errors import BackendUnavailableError, ShapeError
from alignts.kernels.numba_cache import CACHE

_ADDR = ctypes.c_size_t  # a pointer as an integer (x86-64, aarch64: 64 bits)
_DECODE = ctypes.CFUNCTYPE(ctypes.c_int32, _ADDR, _ADDR)  # int32 alignts_llama_decode(ctx, const llama_batch *)
_LOGITS = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_float), _ADDR)  # float * llama_get_logits(ctx)

# what stage_step and the compiled loops return (0: staged / done)
BAD_SEQ, CONTEXT_FULL, BAD_TOKEN, DECODE_FAILED = 1, 2, 3, 4


class NativeStep(NamedTuple):
    """One model's decode step for compiled code (:meth:`LlamaCppModel.native_step`): after ``prefill``, a
    compiled loop stages a step's tokens into the batch's buffers (:func:`stage_step`), decodes them
    (:func:`decode_staged`) and reads ``[n, n_vocab]`` logits from ``get_logits(ctx)``; ``seq_pos`` holds each
    sequence's next position."""

    decode: Any  # _DECODE
    get_logits: Any  # _LOGITS
    ctx: int
    batch: int
    n_tokens: np.ndarray  # [1] int32: the batch's n_tokens field, in place
    tok: np.ndarray  # [cap] the batch's buffers: token, position, sequence id, ids per token, logits flag
    pos: np.ndarray
    seq: np.ndarray
    nseq: np.ndarray
    out: np.ndarray
    seq_pos: np.ndarray  # [n_seq_max] int32
    n_live: int  # the sequences prefill started
    n_ctx: int
    n_vocab: int

    def check(self, status: int, code: int) -> None:
        """Raise what a compiled loop's status says went wrong (``code``: llama_decode's return value)."""
        if status == DECODE_FAILED:
            from alignts.runtime.backends.gguf import decode_error

            raise decode_error(code, "a compiled decode step")
        if status == CONTEXT_FULL:
            raise ShapeError(f"a sequence reached n_ctx={self.n_ctx} tokens; create the model with a larger n_ctx.")
        if status in (BAD_SEQ, BAD_TOKEN):  # the loops make their ids themselves: a bug, not bad input
            raise BackendUnavailableError(f"a compiled decode loop staged {'sequence' if status == BAD_SEQ else 'token'}"
                                          " ids outside the model's range.")
        if status != 0:
            raise BackendUnavailableError(f"a compiled decode loop returned status {status}.")


def native_functions(lib: ctypes.CDLL) -> tuple[Any, Any] | None:
    """(decode, get_logits) of libllama ``lib`` as numba-callable ctypes functions, or None when it has no
    ``alignts_llama_decode`` (a stock llama.cpp)."""
    decode = getattr(lib, "alignts_llama_decode", None)
    if decode is None:
        return None
    return (_DECODE(ctypes.cast(decode, ctypes.c_void_p).value),
            _LOGITS(ctypes.cast(lib.llama_get_logits, ctypes.c_void_p).value))


@njit(cache=CACHE)
def stage_step(tok, seq, seq_pos, n_live, n_ctx, n_vocab, tok_buf, pos_buf, seq_buf, nseq_buf,
               out_buf):  # pragma: no cover - numba
    """Check one decode step's tokens and fill the batch: token i of sequence seq[i] at its next position, logits
    out for every one; then advance seq_pos. Returns 0, or what was wrong (nothing written): BAD_SEQ a sequence id
    outside [0, n_live) or twice, or more tokens than the batch holds, CONTEXT_FULL a sequence at n_ctx, BAD_TOKEN
    a token id outside [0, n_vocab). Shared by ``LlamaCppModel.step`` and the compiled loops; one compiled call
    instead of a dozen numpy ones (a decode step of a small LM is ~0.2 ms, and those cost ~10 us)."""
    n = tok.shape[0]
    if n > tok_buf.shape[0]:
        return BAD_SEQ
    seen = np.zeros(max(n_live, 1), dtype=np.bool_)
    for i in range(n):
        s = seq[i]
        if s < 0 or s >= n_live or seen[s]:
            return BAD_SEQ
        seen[s] = True
        if seq_pos[s] >= n_ctx:
            return CONTEXT_FULL
        if tok[i] < 0 or tok[i] >= n_vocab:
            return BAD_TOKEN
    for i in range(n):
        tok_buf[i] = tok[i]
        pos_buf[i] = seq_pos[seq[i]]
        seq_buf[i] = seq[i]
        nseq_buf[i] = 1
        out_buf[i] = 1
    for i in range(n):
        seq_pos[seq[i]] += 1
    return 0


@njit(cache=CACHE, nogil=True)
def decode_staged(decode, ctx, batch, n_tokens, seq, seq_pos):  # pragma: no cover - numba
    """Decode the step :func:`stage_step` staged for sequences ``seq``; when llama.cpp fails it, their positions go
    back (the step did not happen). Returns llama_decode's code."""
    n_tokens[0] = seq.shape[0]
    rc = decode(ctx, batch)
    if rc != 0:
        for s in seq:
            seq_pos[s] -= 1
    return rc


@njit(cache=CACHE, nogil=True)
def raw_decode_loop(decode, get_logits, ctx, batch, n_tokens, tok_buf, pos_buf, seq_buf, nseq_buf, out_buf, seq_pos,
                    n_ctx, n_vocab, tokens):  # pragma: no cover - numba
    """Decode ``tokens [n_steps, n]`` one row a step, sequence i fed column i, and read the logits after each step
    (no sampling): the floor a sampling loop is compared to. Returns (status, llama_decode's code)."""
    n = tokens.shape[1]
    seq = np.arange(n)
    for t in range(tokens.shape[0]):
        bad = stage_step(tokens[t], seq, seq_pos, n, n_ctx, n_vocab, tok_buf, pos_buf, seq_buf, nseq_buf, out_buf)
        if bad != 0:
            return bad, 0
        rc = decode_staged(decode, ctx, batch, n_tokens, seq, seq_pos)
        if rc != 0:
            return DECODE_FAILED, rc
        get_logits(ctx)
    return 0, 0
