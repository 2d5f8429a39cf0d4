"""Internal paradigm runtime (GPT4TS / LLM4TS with LoRA fused), torch-free.

x [B, C, L] -> kernels.norm_patchify (RevIN + replication-pad patching) -> patches [S, N, P] (S = B*C)
-> core -> normalized forecast [S, H] -> kernels.instance_denorm -> [B, C, H].
With ``config.linear_skip`` the core also adds a fitted Linear(L -> H) on the normalized context (inside the
ONNX graph; ``skip_w``/``skip_b`` from ``io.npz`` for llama.cpp).

The core is either the exported ONNX graph (``onnx-*`` variants: input ``patches``, output ``forecast``) or
llama.cpp (``gguf-*`` variants): numpy patch embedding from ``io.npz`` -> the fused LM on input embeddings
(``LlamaCppModel.hidden_states``) -> numpy flatten head.

Manifest ``config``: :class:`alignts.runtime.configs.InternalRuntimeConfig`.
"""

from __future__ import annotations

import logging

import numpy as np

from alignts.errors import ArtifactError
from alignts.kernels.norm import instance_denorm
from alignts.kernels.patch import context_from_patches, norm_patchify
from alignts.runtime.budget import embedding_geometry
from alignts.runtime.forecaster import Forecaster, register_paradigm
from alignts.runtime.manifest import Variant, bundle_file, load_npz
from alignts.runtime.paradigms.linear import head_layout
from alignts.runtime.threads import plan_threads, single_blas

log = logging.getLogger(__name__)


@register_paradigm("internal")
class InternalForecaster(Forecaster):
    """Forecaster for ``paradigm: internal`` bundles (see the module docstring)."""

    def _open(self, variant: Variant, device: str, threads: int | None, batch_size: int) -> str:
        self._session = None
        self._lm = None
        if variant.backend == "onnx":
            from alignts.runtime.backends.onnx import OnnxSession

            self._session = OnnxSession(bundle_file(self.bundle_dir, self.manifest, variant.files[0]), device=device,
                                        threads=threads,
                                        **self.onnx_options())
            self._in = variant.inputs[0] if variant.inputs else self._session.input_names[0]
            return self._session.provider
        if variant.backend == "gguf":
            return self._open_gguf(variant, device, threads, batch_size)
        raise ArtifactError(f"variant {variant.name!r}: unknown backend {variant.backend!r}; re-export the bundle.")

    def _open_gguf(self, variant: Variant, device: str, threads: int | None, batch_size: int) -> str:
        from alignts.runtime.backends.gguf import LlamaCppModel

        extra = dict(variant.extra)
        io_name = extra.get("io_file", "io.npz")
        lm_name = extra.get("lm_file") or next(f for f in variant.files if f.endswith(".gguf"))
        io = load_npz(self.bundle_dir, self.manifest, io_name, required=("patch_w", "patch_b", "head_w", "head_b"))
        self._patch_w = io["patch_w"].astype(np.float32)  # [d, P]
        self._patch_b = io["patch_b"].astype(np.float32)  # [d]
        self._head_w = head_layout(io["head_w"])  # [H, N*d], its transpose contiguous
        self._head_b = io["head_b"].astype(np.float32)  # [H]
        self._skip = (io["skip_w"].astype(np.float32), io["skip_b"].astype(np.float32)) \
            if "skip_w" in io else None  # [H, L], [H]
        n = self.cfg.n_patches
        s_max = batch_size * (self.cfg.n_channels or 1)
        # n_ctx is per sequence; hidden_states decodes n_seq_max series at once: the plan's geometry (memory
        # counted by the planner), else the same rule here
        flash = bool(extra.get("flash_attn")) and device == "cpu"  # see alignts.export.quantize.FLASH_ATTN_DTYPES
        n_seq, n_batch = embedding_geometry(n, s_max, encoder=self.manifest.architecture == "bert", flash=flash)
        kwargs = dict(n_ctx=n, n_batch=n_batch, embeddings=True, kv_type=extra.get("kv_type", "f32"),
                      n_seq_max=n_seq, flash_attn=flash)
        kwargs.update(self.llama_options(("n_ctx", "n_seq_max", "n_batch", "kv_type", "use_mmap")))
        kwargs["n_ctx"] = max(n, int(kwargs["n_ctx"]))
        if threads:  # as given; by default the plan's count, fewer in each call when the cores are busy
            kwargs["n_threads"] = int(threads)
        else:  # ~24 d^2 FLOPs per token and layer (attention 4 d^2 weights, MLP 8 d^2)
            d, layers = self.cfg.d_model or 768, self.cfg.n_layers or 12
            kwargs["n_threads"] = plan_threads(kwargs["n_batch"], 24.0 * d * d * layers)
            kwargs["adapt_threads"] = True
        loras = [(str(bundle_file(self.bundle_dir, self.manifest, extra["adapter_file"])),
                  float(extra.get("adapter_scale", 1.0)))] if extra.get("adapter_file") else []
        self._lm = LlamaCppModel(str(bundle_file(self.bundle_dir, self.manifest, lm_name)), device=device, loras=loras,
                                 **kwargs)
        return "llama.cpp-cuda" if device == "cuda" else "llama.cpp-cpu"

    def _opened_settings(self) -> dict:
        backend = getattr(self, "_session", None) or getattr(self, "_lm", None)
        return dict(backend.settings) if backend is not None else super()._opened_settings()

    def _core(self, patches: np.ndarray) -> np.ndarray:  # [S, N, P] -> [S, H]
        if self._session is not None:  # in runs of at most ONNX_RUN_TOKENS tokens
            return self._session.run_series(self._in, patches)
        # the small products around llama.cpp on one BLAS thread: OpenBLAS's workers, woken after each llama.cpp
        # call, spin for busy cores (alignts.runtime.threads)
        with single_blas():
            e = patches @ self._patch_w.T + self._patch_b  # [S, N, d]
        h = np.asarray(self._lm.hidden_states(np.ascontiguousarray(e, dtype=np.float32)), dtype=np.float32)
        with single_blas():
            y = h.reshape(h.shape[0], -1) @ self._head_w.T + self._head_b
            if self._skip is not None:
                z = context_from_patches(patches, self.cfg.stride, self.cfg.context_len)
                y = y + z @ self._skip[0].T + self._skip[1]
        return y

    def _forecast(self, x: np.ndarray) -> np.ndarray:
        c = self.cfg
        b, ch, length = x.shape
        patches, mean, std = norm_patchify(x.reshape(b * ch, length), c.patch_len, c.stride, c.eps)
        y = self._core(np.ascontiguousarray(patches, dtype=np.float32))  # [S, H]
        y = instance_denorm(y.astype(np.float64), mean, std)
        return np.asarray(y, dtype=np.float32).reshape(b, ch, -1)
