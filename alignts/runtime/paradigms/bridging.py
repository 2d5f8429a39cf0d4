"""Bridging paradigm runtime (Time-LLM: reprogramming adapter into a frozen LM, prompt-as-prefix), torch-free.

x [B, C, L] -> S = B*C series -> kernels.norm_patchify -> patches [S, N, P] -> ``adapter.onnx`` ->
embeddings [S, N, d]; prompt text per series (kernels.prompt_stats) -> ids (tokenizers, the backbone's
tokenizer.json) -> rows of the backbone's word-embedding table -> prefix [S, T, d]; the shared frozen
backbone on ``[prefix ; embeddings]`` -> last N hidden states -> head (``head.npz``: first d_ff features,
flattened, Linear -> H; with ``config.linear_skip`` plus ``skip_w @ z + skip_b`` on the normalized context z read
back from the patches) -> kernels.instance_denorm -> [B, C, H].

The backbone is its own bundle, found by the sha256 of its manifest (:mod:`alignts.runtime.backbone_store`)
and loaded once per process however many Bridging bundles use it. The LM-removed twin (``config.ablate_lm ==
"identity"``) has none: its embeddings go straight to the head.

Manifest ``config``: :class:`alignts.runtime.configs.BridgingRuntimeConfig`. ``backbone``: {"sha256", "name",
"architecture", "path", "bytes"}.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from alignts.errors import ArtifactError
from alignts.kernels.norm import instance_denorm
from alignts.kernels.patch import context_from_patches, norm_patchify
from alignts.runtime.backbone_store import find_backbone, open_backbone
from alignts.runtime.configs import BridgingRuntimeConfig
from alignts.runtime.forecaster import Forecaster, register_paradigm
from alignts.runtime.manifest import TORCH_TRAINED_NAME, Manifest, Variant, bundle_file, load_npz, read_manifest
from alignts.runtime.paradigms.linear import head_layout
from alignts.runtime.prompt import PrefixEmbedder, PromptConfig, prompt_texts
from alignts.runtime.threads import single_blas

log = logging.getLogger(__name__)

ADAPTER_NAME = "adapter.onnx"
ADAPTER_INT8_NAME = "adapter.int8.onnx"  # the variants on a quantized backbone run it (``extra.adapter_file``)
HEAD_NAME = "head.npz"


def prompt_config(c: BridgingRuntimeConfig) -> PromptConfig:
    """The :class:`PromptConfig` of a Bridging bundle's typed config."""
    return PromptConfig(description=c.description, context_len=c.context_len, horizon=c.horizon, top_k=c.top_k,
                        decimals=c.decimals, eps=c.eps)


@register_paradigm("bridging")
class BridgingForecaster(Forecaster):
    """Forecaster for ``paradigm: bridging`` bundles (see the module docstring).

    backbone_dirs: extra folders to search for the backbone bundle (before the defaults).
    The backbone is located at construction (a missing one raises BackboneNotFoundError right away) and
    loaded at ``plan`` (shared with every other forecaster over the same backbone in the process).
    """

    def __init__(self, bundle_dir: str | Path, manifest: Manifest,
                 backbone_dirs: Iterable[str | os.PathLike] = ()):
        super().__init__(bundle_dir, manifest)
        self.backbone = None
        self.prompt = prompt_config(self.cfg)
        self.ablated = self.cfg.ablate_lm != "none"
        if self.ablated:  # the LM-removed twin: no backbone to find
            self.backbone_sha256, self.backbone_path = None, None
            return
        bb = dict(manifest.backbone)
        if not bb.get("sha256"):
            raise ArtifactError(f"{self.bundle_dir}: a bridging manifest must name its backbone "
                                "(manifest.backbone.sha256); re-export the bundle with `alignts fit bridging`.")
        self.backbone_sha256 = str(bb["sha256"])
        self.backbone_path = find_backbone(self.backbone_sha256, str(bb.get("name", "")), self.bundle_dir,
                                           backbone_dirs, hint=bb.get("path"))

    def _open(self, variant: Variant, device: str, threads: int | None, batch_size: int) -> str:

        c = self.cfg
        extra = dict(variant.extra)
        if self.ablated:
            return self._open_adapter(extra, device, threads)
        self.backbone = open_backbone(self.backbone_path, self.backbone_sha256,
                                      extra.get("backbone_variant", "onnx-fp32"), device, threads,
                                      settings=self.backend_settings)
        if self.backbone.d_model != c.d_llm:
            raise ArtifactError(f"backbone width {self.backbone.d_model} != the adapter's d_llm {c.d_llm}; the "
                                "backbone bundle does not belong to this adapter. Re-export both.")
        self._open_adapter(extra, device, threads)
        self._prefix = PrefixEmbedder(self.prompt, self.backbone.tokenizer, self.backbone.table, c.prompt_len)
        return f"{self._adapter.provider}+{self.backbone.provider}"

    def _open_adapter(self, extra: dict, device: str, threads: int | None) -> str:
        from alignts.runtime.backends.onnx import OnnxSession

        adapter = bundle_file(self.bundle_dir, self.manifest, extra.get("adapter_file", ADAPTER_NAME))
        # beside a backbone the adapter's workers must not spin (they would hold the cores the backbone's run
        # needs: OnnxSession's ``spin``); the LM-removed twin runs the adapter alone
        self._adapter = OnnxSession(adapter, device=device, threads=threads, spin=self.ablated,
                                    **self.onnx_options())
        self._adapter_in = self._adapter.input_names[0]
        c = self.cfg
        skip = ("skip_w", "skip_b") if c.linear_skip else ()
        name = extra.get("head_file", HEAD_NAME)
        h = load_npz(self.bundle_dir, self.manifest, name, required=("weight", "bias") + skip)
        self._head_w = head_layout(h["weight"])  # [H, N*d_ff], its transpose contiguous
        self._head_b = np.ascontiguousarray(h["bias"], dtype=np.float32)  # [H]
        self._skip = None
        if skip:  # the linear skip: [H, L], [H]
            self._skip = (np.ascontiguousarray(h["skip_w"], dtype=np.float32),
                          np.ascontiguousarray(h["skip_b"], dtype=np.float32))
            if (self._skip[0].shape != (self._head_w.shape[0], c.context_len)
                    or self._skip[1].shape != (self._head_w.shape[0],) or c.stride > c.patch_len):
                raise ArtifactError(f"{self.bundle_dir / name}: skip_w {self._skip[0].shape}, skip_b "
                                    f"{self._skip[1].shape} do not fit context_len={c.context_len}, horizon="
                                    f"{self._head_w.shape[0]} (stride {c.stride} <= patch_len {c.patch_len}); "
                                    "re-export the bundle.")
        return self._adapter.provider

    def _opened_settings(self) -> dict[str, Any]:
        """The adapter session's settings; the backbone's, where they differ, under ``backbone_*`` keys."""
        out = dict(self._adapter.settings)
        for k, v in getattr(self.backbone, "settings", {}).items():
            if out.get(k) != v:
                out[f"backbone_{k}"] = v
        return out

    def prompts(self, x) -> list[str]:
        """The prompt text of every series of ``x [B, C, L]`` (B*C strings), for inspection."""
        a = self.prepare(x)
        return prompt_texts(a.reshape(-1, a.shape[-1]), self.prompt)

    def _forecast(self, x: np.ndarray) -> np.ndarray:
        c = self.cfg
        b, ch, length = x.shape
        n, d_ff = c.n_patches, c.d_ff
        flat = x.reshape(b * ch, length)  # [S, L]
        patches, mean, std = norm_patchify(flat, c.patch_len, c.stride, c.eps)
        enc = self._adapter.run({self._adapter_in: np.ascontiguousarray(patches, dtype=np.float32)})[0]  # [S, N, d]
        if self.ablated:  # the LM-removed twin: the embeddings are the "hidden states"
            hidden = enc
        else:
            prefix = self._prefix(flat)  # [S, T, d]
            # the head reads the patches' states only: [S, N, d] (a BERT's last layer skips the prompt's rows then)
            hidden = self.backbone.hidden(np.concatenate([prefix, enc], axis=1), last=n)
        feats = np.ascontiguousarray(hidden[:, -n:, :d_ff]).reshape(b * ch, n * d_ff)
        with single_blas():  # one BLAS thread: OpenBLAS's workers spin after a backend call (runtime.threads)
            y = feats @ self._head_w.T + self._head_b  # [S, H]
            if self._skip is not None:
                z = context_from_patches(patches, c.stride, c.context_len)  # [S, L], float32 as the model's
                y = y + (z @ self._skip[0].T + self._skip[1])
        y = instance_denorm(y.astype(np.float64), mean, std)
        return np.asarray(y, dtype=np.float32).reshape(b, ch, -1)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.ablated:
            d["backbone"] = {"ablated": self.cfg.ablate_lm}
            return d
        d["backbone"] = {**dict(self.manifest.backbone), "found_at": str(self.backbone_path)}
        d["sizes"] = bundle_sizes(self.bundle_dir, backbone_path=self.backbone_path)
        return d


def bundle_sizes(bundle: str | os.PathLike, backbone_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Bytes on disk of a Bridging bundle and of the backbone bundle it points to.

    Returns {"adapter_bytes", "adapter_files": {name: bytes}, "backbone_bytes", "backbone_files",
    "backbone_found": bool, "adapter_to_backbone": ratio}; the torch-only ``torch_trained.safetensors`` (the
    reference for ``alignts bench``, never read at run time) is not counted. Without the backbone at hand the
    backbone size recorded in the adapter's manifest at export time is used.
    """
    bundle = Path(bundle)
    m = read_manifest(bundle, verify=False)
    files = {k: int(v.size) for k, v in m.files.items() if k != TORCH_TRAINED_NAME}  # torch-only file: not counted
    adapter = sum(files.values()) + (bundle / "manifest.json").stat().st_size
    bb = dict(m.backbone)
    found = True
    if backbone_path is None:
        try:
            backbone_path = find_backbone(str(bb.get("sha256", "")), str(bb.get("name", "")), bundle,
                                          hint=bb.get("path"))
        except ArtifactError:
            found = False
    if backbone_path is not None:
        bm = read_manifest(backbone_path, verify=False)
        bfiles = {k: int(v.size) for k, v in bm.files.items()}
        backbone = sum(bfiles.values()) + (Path(backbone_path) / "manifest.json").stat().st_size
    else:
        bfiles, backbone = {}, int(bb.get("bytes", 0))
    return {"adapter_bytes": int(adapter), "adapter_files": files, "backbone_bytes": int(backbone),
            "backbone_files": bfiles, "backbone_found": found,
            "adapter_to_backbone": (adapter / backbone) if backbone else None}
