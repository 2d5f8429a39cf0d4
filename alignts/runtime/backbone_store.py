"""Backbone bundles found by hash, and a process-wide cache so many adapters share one loaded backbone.

A Bridging bundle names its frozen backbone by the sha256 of the backbone bundle's ``manifest.json``
(``manifest.backbone = {"sha256": ..., "name": ..., "path": hint}``). :func:`find_backbone` looks, in order:

1. the ``path`` hint in the adapter's manifest (relative to the adapter bundle);
2. folders passed by the caller (``backbone_dirs=``) and folders registered with :func:`add_backbone_dir`;
3. ``backbones/`` beside the adapter bundle (where ``alignts fit bridging`` writes it) and inside it;
4. the folders in ``$ALIGNTS_BACKBONE_PATH`` (``os.pathsep``-separated);
5. ``~/.cache/alignts/backbones``.

Each folder may be a backbone bundle itself or hold backbone bundles as sub-folders. Nothing found raises
:class:`BackboneNotFoundError` naming the backbone and every place looked.

:func:`open_backbone` returns a :class:`LoadedBackbone` (ONNX session or llama.cpp model, the word-embedding
table memory-mapped, the tokenizer); it is cached by (hash, variant, device) in a weak-value dictionary, so
two forecasters over the same backbone hold one copy, and it is freed when the last one goes.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from alignts.errors import ArtifactError, BackboneNotFoundError, ShapeError
from alignts.runtime.configs import BackboneRuntimeConfig
from alignts.runtime.manifest import MANIFEST_NAME, Manifest, bundle_file, manifest_sha256, read_manifest

log = logging.getLogger(__name__)

ENV_VAR = "ALIGNTS_BACKBONE_PATH"
USER_STORE = Path("~/.cache/alignts/backbones")
# A BERT backbone's ONNX graphs (export KEY_VERSION 7 on) take the positions of the tokens whose states are read
# (int64 [n]) and run the last layer after its attention on those only; older exports take inputs_embeds alone.
ROWS_INPUT = "output_rows"

_extra_dirs: list[Path] = []
_lock = threading.Lock()
_MEM_KEYS = ("arena", "enable_mem_pattern", "disable_prepacking", "kv_type", "use_mmap")
_MEM_DEFAULTS = {"arena": True, "enable_mem_pattern": True, "disable_prepacking": False}  # and use_mmap: _mem_default
_cache: "weakref.WeakValueDictionary[tuple, LoadedBackbone]" = weakref.WeakValueDictionary()
_n_opened = 0  # backbones actually loaded (not served from the cache) in this process


def add_backbone_dir(path: str | os.PathLike) -> None:
    """Register a folder to search for backbone bundles in this process (checked before the defaults)."""
    p = Path(path).expanduser()
    if p not in _extra_dirs:
        _extra_dirs.append(p)


def search_dirs(bundle_dir: str | os.PathLike | None = None, extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The folders searched for backbone bundles, in order (see the module docstring)."""
    dirs = [Path(d).expanduser() for d in extra] + list(_extra_dirs)
    if bundle_dir is not None:
        b = Path(bundle_dir)
        dirs += [b.parent / "backbones", b / "backbones"]
    dirs += [Path(d).expanduser() for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
    dirs.append(USER_STORE.expanduser())
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _candidates(folder: Path) -> Iterable[Path]:
    if (folder / MANIFEST_NAME).is_file():
        yield folder
    if folder.is_dir():
        for child in sorted(folder.iterdir()):
            if child.is_dir() and (child / MANIFEST_NAME).is_file():
                yield child


def find_backbone(sha256: str, name: str = "", bundle_dir: str | os.PathLike | None = None,
                  extra_dirs: Iterable[str | os.PathLike] = (), hint: str | None = None) -> Path:
    """Folder of the backbone bundle whose manifest sha256 is ``sha256``; raises BackboneNotFoundError."""
    looked: list[str] = []
    if hint:
        h = Path(hint).expanduser()
        if not h.is_absolute() and bundle_dir is not None:
            h = Path(bundle_dir) / h
        looked.append(f"{h} (path recorded in the adapter manifest)")
        if (h / MANIFEST_NAME).is_file() and manifest_sha256(h) == sha256:
            return h
    for d in search_dirs(bundle_dir, extra_dirs):
        looked.append(str(d) + ("" if d.is_dir() else " (missing)"))
        for c in _candidates(d):
            if manifest_sha256(c) == sha256:
                return c
    raise BackboneNotFoundError(
        f"the bundle {str(bundle_dir) if bundle_dir else ''!r} needs the backbone {name or '?'!r} with manifest "
        f"sha256 {sha256}, and no backbone bundle with that hash was found. Looked in: {'; '.join(looked)}. "
        f"Fix: copy that backbone bundle folder (written by `alignts fit bridging` into backbones/ beside the "
        f"adapter, or into --backbone-dir) into one of these folders, pass backbone_dirs=[...], or set "
        f"${ENV_VAR}.")


class LoadedBackbone:
    """One loaded frozen backbone: ``hidden(embeds [S, T, d]) -> [S, T, d]``, its embedding table and tokenizer.

    Get it through :func:`open_backbone` (cached), not directly.
    """

    def __init__(self, path: Path, sha256: str, manifest: Manifest, variant: str, device: str,
                 threads: int | None, settings: Mapping[str, Any] | None = None):
        from alignts.runtime.tokenize import PromptTokenizer

        self.path, self.sha256, self.manifest = path, sha256, manifest
        v = manifest.variant(variant)
        self.variant, self.device = v, device
        cfg = BackboneRuntimeConfig.from_manifest(manifest)
        self.d_model = cfg.d_model
        self.table = _open_table(bundle_file(path, manifest, cfg.table), self.d_model)
        self.tokenizer = PromptTokenizer(bundle_file(path, manifest, cfg.tokenizer))
        self._session = self._lm = None
        if v.backend == "onnx":
            from alignts.runtime.backends.onnx import OnnxSession

            opts = {k: settings[k] for k in ("arena", "enable_mem_pattern", "disable_prepacking")
                    if k in (settings or {})}
            # no spinning workers: an adapter's session runs between this one's calls (OnnxSession's ``spin``)
            self._session = OnnxSession(bundle_file(path, manifest, v.files[0]), device=device, threads=threads,
                                        spin=False, **opts)
            self._in = v.inputs[0] if v.inputs else self._session.input_names[0]
            self._rows = ROWS_INPUT in self._session.input_names  # a BERT exported at KEY_VERSION 7 or later
            self.provider = self._session.provider
            self.settings = dict(self._session.settings)
        elif v.backend == "gguf":
            from alignts.runtime.backends.gguf import LlamaCppModel

            extra = dict(v.extra)
            n_ctx = int(extra.get("n_ctx", cfg.n_ctx))
            # n_seq_max / n_batch are capacities: hidden_states groups an encoder's series by the planner's rule
            # (budget.embedding_geometry), with flash attention where the variant was validated with it (CPU)
            kwargs = dict(n_ctx=n_ctx, n_batch=int(extra.get("n_batch", n_ctx)),
                          n_seq_max=int(extra.get("n_seq_max", 1)), embeddings=True,
                          kv_type=extra.get("kv_type", "f32"), device=device,
                          flash_attn=bool(extra.get("flash_attn")) and device == "cpu")
            if threads:
                kwargs["n_threads"] = int(threads)
            kwargs.update({k: settings[k] for k in ("kv_type", "use_mmap") if k in (settings or {})})
            self._lm = LlamaCppModel(str(bundle_file(path, manifest, v.files[0])), **kwargs)
            self.provider = "llama.cpp-cuda" if device == "cuda" else "llama.cpp-cpu"
            self.settings = dict(self._lm.settings)
        else:
            raise ArtifactError(f"backbone variant {v.name!r} has unknown backend {v.backend!r}; re-export it.")
        self.weight_bytes = int(v.weight_bytes)
        self.bundle_bytes = int(sum(f.size for f in manifest.files.values()))

    @property
    def last_rows_only(self) -> bool:
        """Whether ``hidden(..., last=k)`` runs the last layer after its attention (output projection on) on the k
        tokens alone: a BERT's ONNX graph with ``output_rows``, or a BERT on alignts' llama.cpp from patch level 20
        (level 19 cut after the output projection); else every token's is computed."""
        return self._rows if self._session is not None else self._lm.last_rows_only

    def hidden(self, embeds: np.ndarray, last: int | None = None) -> np.ndarray:
        """Final hidden states ``[S, T, d]`` of the frozen LM on input embeddings ``[S, T, d]`` (onnxruntime: in
        runs of at most ``budget.ONNX_RUN_TOKENS`` tokens, ``OnnxSession.run_series``); ``last``: each series'
        last ``last`` states only, ``[S, last, d]``. A BERT then runs its last layer after the attention on those
        tokens only (``last_rows_only``): on alignts' llama.cpp (``LlamaCppModel.hidden_states``) and in an ONNX
        graph exported with ``output_rows``; older exports and causal LMs compute every token's, and the tail is
        taken."""
        e = np.ascontiguousarray(embeds, dtype=np.float32)
        if self._session is None:
            return np.asarray(self._lm.hidden_states(e, last=last), dtype=np.float32)
        T = e.shape[1]
        k = T if last is None else int(last)
        if not 1 <= k <= T:
            raise ShapeError(f"last={last}: expected 1 <= last <= {T} (the tokens of each series to return).")
        if self._rows:
            return self._session.run_series(self._in, e, {ROWS_INPUT: np.arange(T - k, T, dtype=np.int64)})
        h = self._session.run_series(self._in, e)
        return h if k == T else h[:, T - k:]


def _open_table(path: Path, d_model: int) -> np.ndarray:
    """The word-embedding table ``[V, d]``, memory-mapped: pages of rows never looked up are never read (so it is
    not scanned for NaN, which would read them all; its sha256 was checked)."""
    try:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError/OSError/EOFError on a damaged .npy
        raise ArtifactError(f"{path}: not a readable .npy table ({type(e).__name__}: {e}); expected the backbone's "
                            "[vocab, d_model] float word embeddings. Fix: re-export the backbone bundle.") from e
    if table.ndim != 2 or table.shape[1] != d_model or table.dtype.kind != "f":
        raise ArtifactError(f"{path}: table of shape {list(table.shape)} and dtype {table.dtype}; expected float "
                            f"[vocab, {d_model}] (config.d_model). Fix: re-export the backbone bundle.")
    return table


def _mem_default(key: str) -> Any:
    """What a backbone opened without settings gets for ``key`` (None: no default, always part of the cache key).
    llama.cpp's use_mmap is the fast plans' (budget.gguf_use_mmap): read where ggml gives huge pages."""
    if key == "use_mmap":
        from alignts.runtime.budget import gguf_use_mmap

        return gguf_use_mmap("fast")
    return _MEM_DEFAULTS.get(key)


def open_backbone(path: str | os.PathLike, sha256: str, variant: str = "onnx-fp32", device: str = "cpu",
                  threads: int | None = None, settings: Mapping[str, Any] | None = None) -> LoadedBackbone:
    """The loaded backbone at ``path`` (cached by hash, variant, device and memory settings: one copy per
    process for each).

    The first open verifies every file of the variant (sha256) and that the manifest hash is ``sha256``.
    ``threads`` applies to the first open only; later opens share that session. ``settings``: a memory plan's
    backend settings (onnxruntime arena / enable_mem_pattern / disable_prepacking; llama.cpp kv_type /
    use_mmap; other keys are ignored); the backbone's own ``settings`` attribute says what it was opened with.
    """
    global _n_opened
    # only settings that differ from the backends' defaults: a default plan shares the backbone with plain opens
    mem = tuple(sorted((k, v) for k, v in (settings or {}).items()
                       if k in _MEM_KEYS and v != _mem_default(k)))
    key = (sha256, variant, device, mem)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
        path = Path(path)
        actual = manifest_sha256(path)
        if actual != sha256:
            raise BackboneNotFoundError(f"{path}: backbone manifest sha256 is {actual}, expected {sha256}; the "
                                        "folder holds another backbone. Fix: point to the backbone the adapter "
                                        "was fitted with.")
        m = read_manifest(path, verify=False)
        if m.paradigm != "backbone":
            raise ArtifactError(f"{path}: paradigm is {m.paradigm!r}, expected 'backbone'.")
        v = m.variant(variant)
        cfg = BackboneRuntimeConfig.from_manifest(m)
        read_manifest(path, verify=True, only=tuple(dict.fromkeys(m.reads(v) + (cfg.table, cfg.tokenizer))))
        lb = LoadedBackbone(path, sha256, m, variant, device, threads, dict(mem))
        _cache[key] = lb
        _n_opened += 1
        log.info("loaded backbone %s (%s, %s) from %s", m.architecture, sha256[:12], variant, path)
        return lb


def cache_info() -> dict:
    """{"loaded": number of backbones alive in the cache, "opened": total loads in this process, "keys": ...}."""
    with _lock:
        keys = list(_cache.keys())
    return {"loaded": len(keys), "opened": _n_opened, "keys": keys}


def clear_cache() -> None:
    """Forget cached backbones (forecasters that hold one keep it alive until they go)."""
    with _lock:
        _cache.clear()
