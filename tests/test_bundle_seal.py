"""The sealed bundle (issue 11, defects 2 and 8): every file a variant reads is listed and hashed, names are plain
relative paths inside the bundle, symbolic links are refused, files are verified once per load, and one writer
at a time owns an output folder.

The bundle here is tests/seal_bundle.py's Internal one, built without torch (an ONNX core with its weights in
external data, a GGUF core with an ``io.npz`` of patch embedding and head), so each attack runs the real
forecaster end to end.
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
from seal_bundle import H, L, build_bundle, io_arrays

from alignts.errors import AlignTSError, ArtifactError, ManifestError
from alignts.runtime import load
from alignts.runtime import manifest as manifest_mod
from alignts.runtime.manifest import bundle_file, bundle_writer, file_entries, load_npz, read_manifest

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("seal") / "bundle")


@pytest.fixture
def copy(bundle, tmp_path):
    def make(name: str = "b") -> Path:
        dst = tmp_path / name
        shutil.copytree(bundle, dst, symlinks=True)
        return dst
    return make


def _edit(folder: Path, fn) -> None:
    """Edit manifest.json as an attacker would (no checks on the way)."""
    d = json.loads((folder / "manifest.json").read_text())
    fn(d)
    (folder / "manifest.json").write_text(json.dumps(d))


def _rehash(folder: Path, *names: str) -> None:
    """Record the current sha256/size of ``names`` in the manifest (a crafted file must pass the seal to reach
    the code that reads it)."""
    entries = {n: {"sha256": e.sha256, "size": e.size} for n, e in file_entries(folder, names).items()}
    _edit(folder, lambda d: d["files"].update(entries))


def _x() -> np.ndarray:
    return np.sin(np.arange(2 * L, dtype=np.float32) / 3)[None, None, :]


def test_both_variants_forecast(bundle):
    for v in ("onnx-fp32", "gguf-f32"):
        f = load(bundle)
        f.plan(variant=v)
        y = f.forecast_scaled(_x())
        assert y.shape == (1, 1, H) and np.isfinite(y).all()


# ---------------------------------------------------------------------------------------- defect 2: the seal

def test_io_file_outside_the_bundle_is_refused(bundle, copy, tmp_path):
    """The reported attack: an io_file of ../../outside/evil_io.npz changed the forecast while every listed file
    verified. Now the manifest is refused before anything is opened, and inspect fails."""
    b = copy()
    outside = tmp_path / "outside"
    outside.mkdir()
    np.savez(outside / "evil_io.npz", **io_arrays(seed=1, scale=100.0))
    f = load(b)
    f.plan(variant="gguf-f32")
    honest = f.forecast_scaled(_x())

    rel = os.path.relpath(outside / "evil_io.npz", b)
    _edit(b, lambda d: d["variants"][1]["extra"].update(io_file=rel))
    with pytest.raises(ManifestError, match="not a plain relative file name"):
        load(b)
    from alignts.cli import main
    assert main(["inspect", str(b)]) == 2
    # the same file dropped inside the bundle but left out of 'files' is never hashed, so never read
    shutil.copy(outside / "evil_io.npz", b / "evil_io.npz")
    _edit(b, lambda d: d["variants"][1]["extra"].update(io_file="evil_io.npz"))
    with pytest.raises(ManifestError, match="does not list"):
        load(b)
    with pytest.raises(ArtifactError, match="not listed"):  # and the resolver refuses it by name
        bundle_file(b, read_manifest(bundle), "evil_io.npz")
    assert np.isfinite(honest).all()


@pytest.mark.parametrize("name", ["../x.npz", "/etc/passwd", "a//b.npz", "./io.npz", "sub/../io.npz", "a\\b.npz",
                                  "", "io.npz\x00.gguf", "sub/"])
def test_file_names_must_be_plain_relative_paths(copy, name):
    b = copy()

    def attack(d):
        d["files"][name] = d["files"].pop("io.npz")
    _edit(b, attack)
    with pytest.raises(ManifestError, match="plain relative file name"):
        read_manifest(b, verify=False)


@pytest.mark.parametrize("key", ["lm_file", "io_file", "adapter_file", "head_file", "lora_file", "any_file"])
def test_every_file_naming_extra_must_be_listed(copy, key):
    b = copy()
    shutil.copy(b / "io.npz", b / "unlisted.npz")
    _edit(b, lambda d: d["variants"][1]["extra"].update({key: "unlisted.npz"}))
    with pytest.raises(ManifestError, match="reads 'unlisted.npz', which the manifest's 'files' does not list"):
        read_manifest(b, verify=False)


def test_symlinks_are_refused(copy, tmp_path):
    """A link whose target has the right bytes still leaves the bundle: refused by name, for files, parent folders
    and manifest.json, whatever the hash says."""
    b = copy()
    real = tmp_path / "elsewhere.npz"
    shutil.move(b / "io.npz", real)
    os.symlink(real, b / "io.npz")
    with pytest.raises(ArtifactError, match="symbolic link"):
        load(b)
    f = load(b, verify=False)
    with pytest.raises(ArtifactError, match="symbolic link"):
        f.plan(variant="gguf-f32")

    b2 = copy("parent")
    (tmp_path / "realdir").mkdir()
    shutil.move(b2 / "io.npz", tmp_path / "realdir" / "io.npz")
    os.symlink(tmp_path / "realdir", b2 / "sub")
    _edit(b2, lambda d: (d["files"].__setitem__("sub/io.npz", d["files"].pop("io.npz")),
                         d["variants"][1]["files"].__setitem__(1, "sub/io.npz"),
                         d["variants"][1]["extra"].update(io_file="sub/io.npz")))
    with pytest.raises(ArtifactError, match="symbolic link"):
        load(b2)

    b3 = copy("manifest")
    shutil.move(b3 / "manifest.json", tmp_path / "m.json")
    os.symlink(tmp_path / "m.json", b3 / "manifest.json")
    with pytest.raises(ManifestError, match="symbolic link"):
        load(b3)


def test_onnx_external_data_is_sealed(copy):
    # tampered weights in core.onnx.data: caught by its hash
    b = copy("tampered")
    raw = bytearray((b / "core.onnx.data").read_bytes())
    raw[0] ^= 0xFF
    (b / "core.onnx.data").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="core.onnx.data: sha256"):
        load(b)
    # the data file left out of 'files': the ONNX names it, so the load is refused
    b = copy("unlisted")
    _edit(b, lambda d: (d["files"].pop("core.onnx.data"), d["variants"][0]["files"].remove("core.onnx.data")))
    with pytest.raises(ArtifactError, match="'core.onnx.data' is read but not listed"):
        load(b)
    f = load(b, verify=False)
    with pytest.raises(ArtifactError, match="not listed"):
        f.plan(variant="onnx-fp32")
    # a model whose external data points out of the folder
    b = copy("escape")
    raw = (b / "core.onnx").read_bytes()
    (b / "core.onnx").write_bytes(raw.replace(b"core.onnx.data", b"../evil.x.data"))  # onnx refuses to write it
    _rehash(b, "core.onnx")
    with pytest.raises(ArtifactError, match="outside the bundle folder"):
        load(b)


def test_each_file_is_hashed_once_per_load(bundle, monkeypatch):
    manifest_mod._digests.clear()
    calls = []
    real = manifest_mod.hashlib.sha256

    def counting(*a):
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(manifest_mod.hashlib, "sha256", counting)
    f = load(bundle)           # every listed file
    f.plan(variant="gguf-f32")  # the variant's files again: not re-hashed
    f.plan(variant="onnx-fp32")
    assert len(calls) == len(read_manifest(bundle, verify=False).files)
    os.utime(bundle / "io.npz")  # touched: hashed again on the next open
    load(bundle, verify=False).plan(variant="gguf-f32")
    assert len(calls) == len(read_manifest(bundle, verify=False).files) + 1


# ------------------------------------------------------------------------------------------ npz weights

@pytest.mark.parametrize("attack,phrase", [
    ("nan", "NaN/inf"), ("pickle", "not a plain numeric .npz"), ("zip", "cannot read the .npz"),
    ("missing", "missing"), ("text", "expected numbers")])
def test_npz_weights_are_checked(copy, attack, phrase):
    b = copy()
    io = io_arrays()
    if attack == "nan":
        io["head_w"][0, 0] = np.nan
        np.savez(b / "io.npz", **io)
    elif attack == "pickle":
        np.savez(b / "io.npz", **io, extra=np.array([{"a": 1}], dtype=object))
    elif attack == "zip":
        (b / "io.npz").write_bytes((b / "io.npz").read_bytes()[:200])
    elif attack == "missing":
        io.pop("head_b")
        np.savez(b / "io.npz", **io)
    else:
        np.savez(b / "io.npz", **io, names=np.array(["a", "b"]))
    _rehash(b, "io.npz")
    f = load(b)
    with pytest.raises(ArtifactError, match=phrase):
        f.plan(variant="gguf-f32")
    with pytest.raises(ArtifactError, match=phrase):
        load_npz(b, read_manifest(b), "io.npz", required=("patch_w", "patch_b", "head_w", "head_b"))


# --------------------------------------------------------------------------- defect 8: one writer per folder

def test_second_writer_is_refused_with_the_holder(tmp_path):
    out = tmp_path / "out"
    with bundle_writer(out, overwrite=True) as tmp:
        (tmp / "a").write_text("1")
        with pytest.raises(ArtifactError, match=rf"another process \(pid {os.getpid()}.*Fix: wait"):
            with bundle_writer(out, overwrite=True):
                pass
    assert (out / "a").read_text() == "1"
    assert not (tmp_path / ".out.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folders left
    with bundle_writer(out, overwrite=True) as tmp:  # the lock is free again
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]


def test_in_place_editors_take_the_same_lock(copy):
    """quantize and calibrate rewrite a bundle in place: while a writer holds the folder they are refused, and
    the manifest they write replaces the old one atomically (no temporary left)."""
    from alignts.eval.calibrate import write_calibration
    from alignts.export.quantize import quantize_bundle

    b = copy()
    before = (b / "manifest.json").read_bytes()
    with manifest_mod.bundle_lock(b):
        with pytest.raises(ArtifactError, match=rf"another process \(pid {os.getpid()}"):
            quantize_bundle(b, ["int8"])
        with pytest.raises(ArtifactError, match=rf"another process \(pid {os.getpid()}"):
            write_calibration(b, {})
    assert (b / "manifest.json").read_bytes() == before
    m = write_calibration(b, read_manifest(b).config.get("conformal") or {})  # the lock is free again
    assert read_manifest(b) == m and not [p for p in b.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_overwrite_processes(tmp_path):
    """Two processes `fit --overwrite` into one folder: one writes, the other fails naming it; never both
    'succeed' and never 'Directory not empty'."""
    code = textwrap.dedent("""
        import sys, time
        from alignts.errors import ArtifactError
        from alignts.runtime.manifest import bundle_writer
        try:
            with bundle_writer(sys.argv[1], overwrite=True) as tmp:
                for i in range(50):
                    (tmp / f"f{i}").write_text(sys.argv[2])
                time.sleep(1.5)
            print("wrote")
        except ArtifactError as e:
            print("refused:", e)
    """)
    out = tmp_path / "bundle"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out), tag], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for tag in ("A", "B")]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    outs = [r[0].strip() for r in results]
    assert sorted(o.split(":")[0] for o in outs) == ["refused", "wrote"], outs
    winner = "AB"[outs.index("wrote")]
    assert {p.read_text() for p in out.iterdir()} == {winner}
    assert "pid" in next(o for o in outs if o.startswith("refused"))


def test_errors_are_alignts_errors():
    assert issubclass(ManifestError, AlignTSError) and issubclass(ArtifactError, AlignTSError)


def test_onnx_naming_itself_as_external_data(copy):
    """A crafted model whose external data is the model itself, or a second model naming the first: verified once,
    no endless walk."""
    b = copy("self")
    raw = (b / "core.onnx").read_bytes()
    (b / "core.onnx").write_bytes(raw.replace(b"\x0ecore.onnx.data", b"\x09core.onnx"))  # the length byte too
    _rehash(b, "core.onnx")
    with open(b / "core.onnx", "rb") as f:
        assert manifest_mod._onnx_external_data(f, (b / "core.onnx").stat().st_size) == ("core.onnx",)
    read_manifest(b)  # the seal holds (every named file is listed and hashed); onnxruntime judges the model
