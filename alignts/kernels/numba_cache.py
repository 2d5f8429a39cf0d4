"""Where numba caches the kernels' machine code (``@njit(cache=CACHE)``), on any install, read-only ones included.

numba writes its cache beside the source (``alignts/kernels/__pycache__``). Where the package folder is not
writable (a system or container install, a read-only image) numba tries its user-wide folder
(``~/.cache/numba``) and, when that fails too, refuses to import a ``cache=True`` function at all ("cannot cache
function ...: no locator available"). This module runs before the first kernel is decorated and decides:

1. ``ALIGNTS_NUMBA_CACHE=0``: no cache (every process compiles the kernels again, about 0.7 s, and an Injective
   process its sampling loop, about 2.4 s on the Intel Xeon of results/speed_llama.md section 14).
2. ``NUMBA_CACHE_DIR`` set and writable: numba's own setting, untouched.
3. The package folder writable: numba's default, beside the source.
4. Otherwise the first writable of ``$XDG_CACHE_HOME/alignts/numba`` (default ``~/.cache/alignts/numba``),
   ``<tempdir>/alignts-numba-<uid>`` and ``/dev/shm/alignts-numba-<uid>`` becomes ``NUMBA_CACHE_DIR`` (set
   in ``os.environ`` and numba's config, so it holds for the whole process, other numba users in it included,
   and for child processes).
5. None writable: no cache, logged; the kernels still compile and run.

``CACHE`` is the resulting flag, ``CACHE_DIR`` the folder (None: beside the source, or no cache);
:func:`describe` says which, for ``alignts env``.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

__all__ = ["CACHE", "CACHE_DIR", "describe", "choose", "writable_dir", "fallback_dirs", "source_dirs"]


def source_dirs() -> list[Path]:
    """The folders holding ``cache=True`` kernels (numba's in-tree cache is their ``__pycache__``)."""
    root = Path(__file__).resolve().parent.parent
    return [root / "kernels", root / "runtime"]


def fallback_dirs() -> list[Path]:
    """Writable-cache candidates, in order, for a package folder that is not writable."""
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    out = [Path(xdg) / "alignts" / "numba"]
    try:
        out.append(Path(tempfile.gettempdir()) / f"alignts-numba-{uid}")
    except (OSError, FileNotFoundError):  # no usable temporary folder at all
        pass
    if os.path.isdir("/dev/shm"):
        out.append(Path("/dev/shm") / f"alignts-numba-{uid}")
    return out


def writable_dir(path: Path, create: bool = False, private: bool = False) -> bool:
    """Whether numba could write its cache into ``path`` (a folder, or one whose parent is writable).

    create: make the folder first (mode 0700). private: accept it only if it is this user's own, not a link
    and not writable by others: numba's cache files are pickles, so a folder another user can write to (one
    pre-made under /tmp) would let them run code in this process."""
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if private:
            st = path.lstat()
            if (path.is_symlink() or not path.is_dir() or st.st_mode & 0o022
                    or (hasattr(os, "getuid") and st.st_uid != os.getuid())):
                return False
        if path.is_dir():
            return os.access(path, os.W_OK | os.X_OK)
        if path.exists():  # a file where the folder would go
            return False
        parent = path.parent
        return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)
    except OSError:
        return False


def choose(sources: Iterable[Path], fallbacks: Iterable[Path], environ=os.environ) -> tuple[bool, str | None, str]:
    """(cache on, NUMBA_CACHE_DIR to set or None, why) for kernels in ``sources``; pure apart from mkdir."""
    if environ.get("ALIGNTS_NUMBA_CACHE", "1").strip() == "0":
        return False, None, "off (ALIGNTS_NUMBA_CACHE=0)"
    user = environ.get("NUMBA_CACHE_DIR")
    if user and writable_dir(Path(user), create=True):
        return True, None, f"{user} (NUMBA_CACHE_DIR)"
    if user:
        log.warning("NUMBA_CACHE_DIR=%s is not writable; looking for another numba cache folder", user)
    if all(writable_dir(d / "__pycache__") for d in sources):
        return True, None, "beside the source (the package's __pycache__ folders)"
    for d in fallbacks:
        if writable_dir(d, create=True, private=True):
            return True, str(d), f"{d} (the package folder is not writable)"
    log.warning("no writable folder for numba's cache (package folder, %s): the kernels compile in every "
                "process. Fix: set NUMBA_CACHE_DIR to a writable folder.", ", ".join(str(d) for d in fallbacks))
    return False, None, "off (no writable folder; set NUMBA_CACHE_DIR to one)"


def _configure() -> tuple[bool, str | None, str]:
    cache, cache_dir, why = choose(source_dirs(), fallback_dirs())
    if cache_dir is not None:
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
        config = sys.modules.get("numba.core.config")
        if config is not None:  # numba read its environment already: tell its config too
            config.CACHE_DIR = cache_dir
        log.debug("numba cache: %s", why)
    return cache, cache_dir, why


CACHE, CACHE_DIR, _WHY = _configure()


def describe() -> str:
    """Where the kernels' numba cache lives in this process, in words (``alignts env``)."""
    return _WHY
