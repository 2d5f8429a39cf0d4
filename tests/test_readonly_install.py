"""The runtime forecasts from a package folder nobody can write to (alignts/kernels/numba_cache.py).

A copy of the ``alignts`` package and a tiny Internal bundle sit in a read-only folder: a read-only bind mount
in a private mount namespace when running as root (root ignores file modes, not a read-only mount), ``chmod -R
a-w`` otherwise. HOME and XDG_CACHE_HOME point below /dev/null, so numba's own fallback (~/.cache/numba) fails
too: there numba alone refuses to import any ``cache=True`` function ("no locator available"; the control case
below shows it), and alignts must pick another folder or run without a cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import alignts
from alignts.kernels import numba_cache

pytest.importorskip("onnxruntime")

PACKAGE = Path(alignts.__file__).resolve().parent
UNWRITABLE = "/dev/null/cache"  # below a file: no one can create it, root included
L, H = 32, 8

CHILD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import alignts, alignts.runtime as rt
    from alignts.kernels import numba_cache
    assert alignts.__file__.startswith(sys.argv[1]), alignts.__file__
    f = rt.load(sys.argv[2])
    f.plan(context_len={L}, horizon={H}, batch_size=2)
    x = np.random.default_rng(0).standard_normal((2, 2, {L})).cumsum(-1)  # [B, C, L]
    y = f.forecast(x)
    y = np.asarray(getattr(y, "mean", y))  # [B, C, H]
    print(json.dumps({{"y": y.tolist(), "cache": numba_cache.CACHE, "cache_dir": numba_cache.CACHE_DIR,
                      "why": numba_cache.describe()}}))
""").format(L=L, H=H)

PROBE = textwrap.dedent("""
    from numba import njit

    @njit(cache=True)
    def f(x):
        return x + 1
""")


@pytest.fixture(scope="module")
def tiny_internal(tmp_path_factory, csv) -> Path:
    pytest.importorskip("torch")
    from alignts.export.fit_internal import FitInternalConfig, fit_internal
    from alignts.export.internal import InternalConfig
    from alignts.export.train import TrainConfig

    out = tmp_path_factory.mktemp("ro-bundle") / "internal"
    fit_internal(FitInternalConfig(
        data=str(csv), out=str(out), backbone="tiny-gpt2",
        model=InternalConfig(context_len=L, horizon=H, patch_len=8, stride=8, lora_rank=2, lora_alpha=4.0),
        train=TrainConfig(epochs=1, batch_size=16, max_train_windows=16, max_val_windows=8, threads=1),
        int8=False, gguf=False), command="test")
    return out


@pytest.fixture()
def readonly_tree(tmp_path, tiny_internal):
    """(run, root): ``run(argv, env)`` runs ``argv`` with ``root`` (package copy, bundle, child scripts) read-only."""
    root = tmp_path / "ro"
    shutil.copytree(PACKAGE, root / "pkg" / "alignts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(tiny_internal, root / "bundle")
    (root / "child.py").write_text(CHILD)
    (root / "pkg" / "probe_nb.py").write_text(PROBE)
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("running as root without unshare(1): cannot make a folder read-only for root")
        ok = subprocess.run([unshare, "-rm", "sh", "-c", f"mount --bind -o ro {root} {root} && ! touch {root}/x"],
                            capture_output=True)
        if ok.returncode != 0:
            pytest.skip(f"no private read-only mount here (user namespaces off?): {ok.stderr.decode()[-200:]}")

        def run(argv, env):
            script = f'mount --bind -o ro "{root}" "{root}" && exec "$@"'
            return subprocess.run([unshare, "-rm", "sh", "-c", script, "sh", *argv], env=env, capture_output=True,
                                  text=True, timeout=300)
    else:
        subprocess.run(["chmod", "-R", "a-w", str(root)], check=True)

        def run(argv, env):
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    yield run, root
    subprocess.run(["chmod", "-R", "u+w", str(root)], check=False)


def _env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "ALIGNTS_NUMBA"))}
    tmp = tmp_path / "tmpdir"
    tmp.mkdir(exist_ok=True)
    env.update(HOME=UNWRITABLE, XDG_CACHE_HOME=UNWRITABLE, TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def _forecast(run, root: Path, env: dict) -> dict:
    r = run([sys.executable, str(root / "child.py"), str(root / "pkg"), str(root / "bundle")], env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _reference(tiny_internal: Path, tmp_path: Path) -> list:
    """The same forecast from the writable checkout."""
    script = tmp_path / "child_rw.py"
    script.write_text(CHILD)
    r = subprocess.run([sys.executable, str(script), str(PACKAGE.parent), str(tiny_internal)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])["y"]


def test_numba_alone_fails_there(readonly_tree, tmp_path):
    """The control: with no writable cache folder, numba refuses a cache=True function at import."""
    run, root = readonly_tree
    code = f"import sys; sys.path.insert(0, {str(root / 'pkg')!r}); import probe_nb"
    r = run([sys.executable, "-c", code], _env(tmp_path))
    assert r.returncode != 0 and "no locator available" in r.stderr, r.stderr[-2000:]


def test_readonly_falls_back_to_temp_cache(readonly_tree, tmp_path, tiny_internal):
    run, root = readonly_tree
    env = _env(tmp_path)
    first = _forecast(run, root, env)
    cache = Path(first["cache_dir"])
    assert first["cache"] and cache.parent == tmp_path / "tmpdir" and cache.name.startswith("alignts-numba-")
    assert any(cache.rglob("*.nbi")), "numba wrote no cache index there"
    assert (cache.stat().st_mode & 0o077) == 0  # private: numba's cache files are pickles
    second = _forecast(run, root, env)  # from the cache now
    assert second["y"] == first["y"]
    np.testing.assert_allclose(first["y"], _reference(tiny_internal, tmp_path), rtol=1e-6, atol=1e-9)


def test_readonly_uses_user_cache(readonly_tree, tmp_path):
    run, root = readonly_tree
    xdg = tmp_path / "xdg"
    out = _forecast(run, root, _env(tmp_path, XDG_CACHE_HOME=str(xdg)))
    assert out["cache"] and Path(out["cache_dir"]) == xdg / "alignts" / "numba", out["why"]
    assert any((xdg / "alignts" / "numba").rglob("*.nbi"))


def test_no_cache_runs_and_writes_nothing(readonly_tree, tmp_path):
    run, root = readonly_tree
    out = _forecast(run, root, _env(tmp_path, ALIGNTS_NUMBA_CACHE="0"))
    assert out["cache"] is False and out["cache_dir"] is None and "off" in out["why"]
    assert not any((tmp_path / "tmpdir").iterdir())


# ------------------------------------------------------------------------------ the decision, in process


def test_choose_order(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder would go")
    user, tmp = tmp_path / "user", tmp_path / "tmp"

    # a writable package folder: numba's default, nothing set
    cache, where, why = numba_cache.choose([src], [user], environ={})
    assert (cache, where) == (True, None) and "beside the source" in why
    # a package folder that cannot hold __pycache__ (root respects this one too): the first usable fallback
    (src / "__pycache__").write_text("not a folder")
    assert numba_cache.choose([src], [blocked / "c", user, tmp], environ={})[:2] == (True, str(user))
    # NUMBA_CACHE_DIR set and writable: left to numba
    assert numba_cache.choose([src], [tmp], environ={"NUMBA_CACHE_DIR": str(tmp_path / "mine")})[:2] == (True, None)
    # nothing writable: no cache, no exception
    cache, where, why = numba_cache.choose([src], [blocked / "a", blocked / "b"], environ={})
    assert (cache, where) == (False, None) and "NUMBA_CACHE_DIR" in why
    assert numba_cache.choose([src], [user], environ={"ALIGNTS_NUMBA_CACHE": "0"})[:2] == (False, None)


def test_shared_fallback_is_refused(tmp_path):
    """A pre-made folder others can write to (e.g. under /tmp) is not used: numba's cache files are pickles."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "__pycache__").write_text("not a folder")
    shared, own = tmp_path / "shared", tmp_path / "own"
    shared.mkdir()
    shared.chmod(0o777)
    assert numba_cache.choose([src], [shared, own], environ={})[:2] == (True, str(own))
    assert own.stat().st_mode & 0o777 == 0o700
