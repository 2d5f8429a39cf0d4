"""onnxruntime causal-LM generation with a KV cache (torch-free, no optimum at run time).

Reads an ONNX decoder exported with past key/values (optimum's ``text-generation-with-past`` task, e.g. by
``alignts fit injective --model HF_DIR``): inputs ``input_ids [b, s]``, ``attention_mask [b, past + s]``,
optional ``position_ids [b, s]`` and ``past_key_values.{i}.key/value [b, heads, past, head_dim]``; outputs
``logits [b, s, V]`` and ``present.{i}.key/value``. The interface matches the llama.cpp backend's generation
side: ``prefill(prompt_ids, n_parallel)`` then ``step(tokens, seq_ids)``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from alignts.errors import ArtifactError, InputError, ShapeError
from alignts.runtime.backends.onnx import _ort, cuda_providers, session_options

log = logging.getLogger(__name__)

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")


class OrtCausalLM:
    """A causal LM in onnxruntime, generating n parallel sequences from one prompt.

    Args:
        path: the ONNX decoder with past (a bundle's ``model.onnx``).
        n_ctx: most tokens per sequence (prompt + generated); longer raises ShapeError.
        threads: intra-op threads (None = onnxruntime's default). device: "cpu" or "cuda".
        arena, enable_mem_pattern, disable_prepacking: onnxruntime memory options of a plan (as
            :class:`alignts.runtime.backends.onnx.OnnxSession`).
    Attributes: n_vocab, n_layer, eos_id (None: not known to the ONNX file), settings (what was applied).
    """

    def __init__(self, path: str | os.PathLike, n_ctx: int = 1024, threads: int | None = None,
                 device: str = "cpu", arena: bool = True, enable_mem_pattern: bool = True,
                 disable_prepacking: bool = False):
        ort = _ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"ONNX decoder {str(self.path)!r} does not exist; expected the model.onnx of an "
                                "Injective bundle (alignts fit injective --model HF_DIR --backend onnx).")
        so = session_options(ort, threads, arena=arena, enable_mem_pattern=enable_mem_pattern,
                             disable_prepacking=disable_prepacking, device=device)
        self.settings = {"arena": bool(arena), "enable_mem_pattern": bool(enable_mem_pattern),
                         "disable_prepacking": bool(disable_prepacking), "n_ctx": int(n_ctx)}
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            providers = cuda_providers(ort)
        try:
            self.sess = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ArtifactError(f"onnxruntime cannot load {self.path} ({type(e).__name__}: {e}); expected an "
                                "ONNX causal LM with past key/values. Re-export the bundle.") from e
        self.provider = self.sess.get_providers()[0]
        if device == "cuda" and self.provider != "CUDAExecutionProvider":
            from alignts.errors import BackendUnavailableError

            raise BackendUnavailableError(f"device='cuda' asked, but onnxruntime fell back to {self.provider} "
                                          "(CUDA/cuDNN libraries not found). Fix: pip install 'alignts[gpu]', "
                                          "or use device='cpu'.")
        names = {i.name: i for i in self.sess.get_inputs()}
        past = sorted((int(m.group(1)), m.group(2), n) for n in names if (m := _PAST.match(n)))
        if "input_ids" not in names or not past:
            raise ArtifactError(f"{self.path}: inputs {sorted(names)} are not those of a decoder with past; "
                                "expected input_ids and past_key_values.N.key/value (optimum task "
                                "text-generation-with-past). Re-export the bundle.")
        self.n_layer = past[-1][0] + 1
        self._past_names = [f"past_key_values.{i}.{kv}" for i in range(self.n_layer) for kv in ("key", "value")]
        self._present_names = [f"present.{i}.{kv}" for i in range(self.n_layer) for kv in ("key", "value")]
        shape = names[self._past_names[0]].shape  # [b, heads, past, head_dim]
        self.n_head, self.head_dim = int(shape[1]), int(shape[3])
        self._has_pos = "position_ids" in names
        self._has_mask = "attention_mask" in names
        self._dtype = np.float16 if "float16" in names[self._past_names[0]].type else np.float32
        outs = [o.name for o in self.sess.get_outputs()]
        self._out_names = ["logits"] + self._present_names
        missing = [o for o in self._out_names if o not in outs]
        if missing:
            raise ArtifactError(f"{self.path}: outputs {missing} are missing; expected logits and present.N.*.")
        v = self.sess.get_outputs()[outs.index("logits")].shape[-1]
        self.n_vocab = int(v) if isinstance(v, int) else -1
        self.n_ctx = int(n_ctx)
        self.n_seq_max = 1 << 16
        self.eos_id = None
        self._past: list[np.ndarray] = []
        self._len = 0
        self._live = np.zeros(0, dtype=np.int64)

    def reset(self) -> None:
        """Forget all sequences."""
        self._past, self._len, self._live = [], 0, np.zeros(0, dtype=np.int64)

    def _run(self, ids: np.ndarray, past: list[np.ndarray], past_len: int) -> tuple[np.ndarray, list[np.ndarray]]:
        b, s = ids.shape
        feeds = {"input_ids": ids}
        if self._has_mask:
            feeds["attention_mask"] = np.ones((b, past_len + s), dtype=np.int64)
        if self._has_pos:
            feeds["position_ids"] = np.broadcast_to(np.arange(past_len, past_len + s, dtype=np.int64), (b, s)).copy()
        feeds.update(zip(self._past_names, past))
        res = self.sess.run(self._out_names, feeds)
        return res[0], res[1:]

    def prefill(self, prompt_ids: Sequence[int] | np.ndarray, n_parallel: int = 1, copy: bool = True) -> np.ndarray:
        """Run the prompt once, copy its cache to ``n_parallel`` sequences; returns logits [n_parallel, V]."""
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(1, -1)
        T = ids.shape[1]
        if T < 1:
            raise InputError("prefill needs at least one prompt token; got none.")
        if T >= self.n_ctx:
            raise ShapeError(f"prompt of {T} tokens does not fit n_ctx={self.n_ctx}. Fix: a shorter context or "
                             "horizon, or a larger n_ctx when the model was trained for it.")
        if n_parallel < 1:
            raise InputError(f"n_parallel={n_parallel}: expected >= 1.")
        empty = [np.zeros((1, self.n_head, 0, self.head_dim), dtype=self._dtype) for _ in self._past_names]
        logits, present = self._run(ids, empty, 0)
        self._past = [np.repeat(p, n_parallel, axis=0) for p in present]
        self._len = T
        self._live = np.arange(n_parallel)
        row = logits[:, -1, :].astype(np.float32)
        if self.n_vocab < 0:
            self.n_vocab = row.shape[-1]
        return np.repeat(row, n_parallel, axis=0)

    def step(self, tokens: Sequence[int] | np.ndarray, seq_ids: Sequence[int] | np.ndarray | None = None,
             copy: bool = True) -> np.ndarray:
        """Append one token per sequence; returns next-token logits [k, V].

        seq_ids: which sequences step (default: all live ones). All live sequences have the same length, so
        sequences left out are dropped for good (the Injective sampler stops finished samples this way).
        """
        tok = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if seq_ids is not None:
            seq = np.asarray(seq_ids, dtype=np.int64).reshape(-1)
            if seq.shape != tok.shape:
                raise ShapeError(f"seq_ids {seq.tolist()} must match tokens {tok.tolist()} one to one.")
            if not np.array_equal(seq, self._live):
                pos = np.searchsorted(self._live, seq)
                if (pos >= self._live.size).any() or not np.array_equal(self._live[np.minimum(pos, self._live.size - 1)], seq):
                    raise ShapeError(f"seq_ids {seq.tolist()} are not live sequences {self._live.tolist()}; "
                                     "the ONNX backend only continues or drops sequences.")
                self._past = [p[pos] for p in self._past]
                self._live = seq
        elif tok.shape[0] != self._live.size:
            raise ShapeError(f"step got {tok.shape[0]} tokens for {self._live.size} live sequences.")
        if self._len + 1 > self.n_ctx:
            raise ShapeError(f"a sequence reached n_ctx={self.n_ctx} tokens; raise n_ctx.")
        logits, self._past = self._run(tok[:, None], self._past, self._len)
        self._len += 1
        return logits[:, -1, :].astype(np.float32, copy=False)
