"""Stream state files: one atomic file per stream, refused when corrupt or written for another bundle.

Layout: the line ``alignts-stream <FORMAT>``, the sha256 (hex) of the payload on the next line, then the payload:
an ``.npz`` archive of the state's arrays plus ``__meta__`` (the JSON of everything else). A write goes to a
temporary file in the same folder, is flushed and fsync'ed, then renamed over the target (``os.replace``), so
a crash leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from alignts.errors import ArtifactError

FORMAT = 1
MAGIC = f"alignts-stream {FORMAT}\n".encode()


def dumps(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes of a state file (see the module docstring)."""
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    payload = buf.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def loads(data: bytes, where: str = "stream state") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) from :func:`dumps`' bytes; ArtifactError naming what is wrong when they are not that."""
    fix = "Fix: restore from an intact copy, or start a new stream (f.stream(...))."
    if not data.startswith(b"alignts-stream "):
        raise ArtifactError(f"{where} is not an alignts stream state (it does not start with 'alignts-stream'). "
                            f"{fix}")
    if not data.startswith(MAGIC):
        got = data.split(b"\n", 1)[0].decode(errors="replace")
        raise ArtifactError(f"{where} has format {got!r}; expected {MAGIC.decode().strip()!r}. Fix: write it "
                            "again with this alignts version, or restore it with the version that wrote it.")
    head, _, payload = data[len(MAGIC):].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != head:
        raise ArtifactError(f"{where} is corrupt: its payload's sha256 does not match its header (truncated or "
                            f"changed). {fix}")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (ValueError, KeyError, OSError) as e:
        raise ArtifactError(f"{where} is corrupt ({type(e).__name__}: {e}). {fix}") from None
    return meta, arrays


def save(path: str | os.PathLike, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write a state file atomically (temporary file, fsync, rename); returns the path."""
    path = Path(path)
    data = dumps(meta, arrays)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a state file written by :func:`save`."""
    return loads(Path(path).read_bytes(), where=f"stream state {path}")
