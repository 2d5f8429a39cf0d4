"""Where a fuzz finding happened: the innermost alignts frame of an exception (the site to fix), so that counts
group by site, as the issue's "932 exceptions at 4 sites" did."""

from __future__ import annotations

import traceback


def site(e: BaseException) -> str:
    """``"TypeError at alignts/runtime/x.py:123"`` (the innermost frame in alignts; else the innermost frame)."""
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if "/alignts/" in f.filename and "site-packages" not in f.filename]
    f = (ours or frames or [None])[-1]
    if f is None:
        return f"{type(e).__name__} at ?"
    i = f.filename.rfind("/alignts/")
    where = f.filename[i + 1:] if i >= 0 and "site-packages" not in f.filename else f.filename.rsplit("/", 1)[-1]
    return f"{type(e).__name__} at {where}:{f.lineno}"
