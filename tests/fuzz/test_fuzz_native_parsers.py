"""Fuzz targets for the C runner's parsers (native/runner csv.c, json.c, npz.c; issue 11, defect 5): alignts-run
is fed mutated CSV files, manifest.json files and io.npz files, one subprocess per example.

Property: the exit status is 0 (and every forecast value printed is finite) or a clean error (1, or 2 for
usage) with an ``alignts-run: error:`` line on stderr; never a signal (negative return code) or a timeout.

Bundles, built without torch: an Injective bundle of the embedded numeric LM, and an Internal bundle whose
io.npz (patch embedding and head, seeded random weights) feeds the same GGUF through llama.cpp's embeddings
input. Each mutated npz is re-hashed into its manifest, so the parser, not the sha256 check, meets it.
The runner is built by tests/test_native_runner.py's ``runner`` fixture (imported, not copied), or
ALIGNTS_FUZZ_RUNNER names a prebuilt one, e.g. an ASan/UBSan build (sanitizer reports fail the property).
Budget: the ``alignts-fuzz`` profile / 2 per target (a process per example); ALIGNTS_FUZZ_EXAMPLES sets it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from byte_mutations import mutate
from hypothesis import given, settings
from hypothesis import strategies as st
from test_native_runner import runner  # noqa: F401 - the fixture that builds alignts-run

FUZZ = settings.get_profile("alignts-fuzz")
NATIVE = settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 2))
L, H, P, STRIDE = 16, 2, 8, 4
N_PATCHES = (L - P) // STRIDE + 2
TIMEOUT_S = 60


# A sanitizer build reports with its own exit codes, which the property then rejects (leaks are not findings here:
# llama.cpp keeps some memory until exit).
_SANITIZERS = {"ASAN_OPTIONS": "exitcode=86:detect_leaks=0:abort_on_error=0",
               "UBSAN_OPTIONS": "halt_on_error=1:exitcode=87:print_stacktrace=1"}


@pytest.fixture(scope="module")
def exe(request) -> Path:
    """alignts-run: ALIGNTS_FUZZ_RUNNER names a prebuilt one (e.g. an ASan/UBSan build), else the test build."""
    given = os.environ.get("ALIGNTS_FUZZ_RUNNER")
    return Path(given) if given else request.getfixturevalue("runner")


def run(exe: Path, bundle: Path, data: Path, *extra) -> subprocess.CompletedProcess:
    env = {**_SANITIZERS, **{k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}}
    try:
        return subprocess.run([str(exe), str(bundle), "--data", str(data), *map(str, extra)], capture_output=True,
                              timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"alignts-run hung (> {TIMEOUT_S} s) on {data} with bundle {bundle}")


def check(r: subprocess.CompletedProcess) -> None:
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode >= 0, f"alignts-run died of signal {-r.returncode}: {err[-2000:]}"
    assert "Sanitizer" not in err and "runtime error:" not in err, err[-3000:]
    assert r.returncode in (0, 1, 2), f"exit {r.returncode}: {err[-2000:]}"
    if r.returncode:
        assert "alignts-run: error: " in err, err[-2000:]
        return
    lines = r.stdout.decode("utf-8", "replace").strip().splitlines()
    assert lines and lines[0].startswith("step"), r.stdout[:500]
    for line in lines[1:]:  # step,value,... (series names appear in the header only)
        vals = [float(c) for c in line.split(",")[1:]]
        assert np.isfinite(vals).all(), f"a non-finite forecast with exit 0: {line!r}"


def _csv(n: int = 40, channels: int = 1) -> bytes:
    rows = ["date," + ",".join(f"x{c}" for c in range(channels))]
    for i in range(n):
        vals = ",".join(f"{np.sin(i / 3.0 + c) * 5 + 10:.4f}" for c in range(channels))
        rows.append(f"2020-01-{1 + i // 24:02d} {i % 24:02d}:00:00,{vals}")
    return ("\n".join(rows) + "\n").encode()


def _file_entry(path: Path) -> dict:
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """(injective, internal) bundle folders and a CSV both accept."""
    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective

    root = tmp_path_factory.mktemp("fuzz-bundles")
    inj = root / "injective"
    fit_injective(inj, InjectiveFitConfig(context_len=L, horizon=H, samples=1, greedy=True))
    m = json.loads((inj / "manifest.json").read_text())
    gguf = next(f for f in m["files"] if f.endswith("q8_0.gguf"))

    internal = root / "internal"
    internal.mkdir()
    shutil.copy(inj / gguf, internal / "lm.gguf")
    from alignts.runtime.gguf_check import check_gguf

    d = check_gguf(internal / "lm.gguf").n_embd  # the numeric LM's width
    rng = np.random.default_rng(0)
    np.savez(internal / "io.npz", patch_w=rng.standard_normal((d, P)) * 0.1, patch_b=np.zeros(d),
             head_w=rng.standard_normal((H, N_PATCHES * d)) * 0.01, head_b=np.zeros(H))
    manifest = {
        "format": "alignts-bundle", "format_version": "1.0", "paradigm": "internal", "architecture": "gpt2",
        "files": {"lm.gguf": _file_entry(internal / "lm.gguf"), "io.npz": _file_entry(internal / "io.npz")},
        "variants": [{"name": "gguf-q8_0", "backend": "gguf", "dtype": "q8_0", "files": ["lm.gguf", "io.npz"],
                      "extra": {"lm_file": "lm.gguf", "io_file": "io.npz"}}],
        "config": {"context_len": L, "horizon": H, "n_channels": 2, "patch_len": P, "stride": STRIDE,
                   "n_patches": N_PATCHES, "d_model": d, "eps": 1e-5, "columns": ["x0", "x1"],
                   "scaler": {"mean": [10.0, 10.0], "std": [3.0, 3.0]}},
    }
    (internal / "manifest.json").write_text(json.dumps(manifest, indent=1))
    data = root / "ok.csv"
    data.write_bytes(_csv(channels=2))
    return inj, internal, data


def test_bundles_run(exe, bundles):
    """The unmutated seeds forecast (so the mutations start from inputs the runner accepts)."""
    inj, internal, data = bundles
    for b in (inj, internal):
        r = run(exe, b, data)
        assert r.returncode == 0, r.stderr.decode()
        check(r)


CSV_SEEDS = [_csv(), _csv(channels=2), _csv(channels=2).replace(b",", b";"), _csv().replace(b",", b"\t"),
             b'date,"x0",x1\n' + b"".join(b'"2020-01-01 %02d:00",%d,%d.5\n' % (i, i, i) for i in range(20))]


@NATIVE
@given(data=st.data(), seed=st.sampled_from(CSV_SEEDS), internal=st.booleans())
def test_fuzz_runner_csv(exe, bundles, tmp_path_factory, data, seed, internal):
    inj, intl, _ = bundles
    p = tmp_path_factory.mktemp("csv") / "f.csv"
    p.write_bytes(mutate(data, seed))
    extra = () if internal else ("--context", data.draw(st.sampled_from([2, 4, 16])), "--horizon", 1)
    check(run(exe, intl if internal else inj, p, *extra))


def _manifest_edit(data, text: bytes) -> bytes:
    """A JSON-aware edit: a value replaced by another type, a number by an extreme one, deep nesting."""
    doc = json.loads(text)
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))

    walk(doc, ())
    path = data.draw(st.sampled_from(paths[1:]))
    value = data.draw(st.one_of(
        st.sampled_from([None, True, "", "../x", "/etc/passwd", "x" * 5000, -1, 0, 2 ** 63, 1e308, -1e308, 1e-308,
                         0.5, float("nan"), float("inf"), [], {}, [1, [2, [3]]], "f32", "q8_0", "gguf", "onnx"]),
        st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)))
    node = doc
    for k in path[:-1]:
        node = node[k]
    if data.draw(st.booleans()) and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    out = json.dumps(doc).encode()
    if data.draw(st.integers(0, 9)) == 0:  # nesting past the reader's depth limit
        depth = data.draw(st.sampled_from([63, 64, 65, 1000]))
        out = out[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    return out


@NATIVE
@given(data=st.data(), internal=st.booleans(), structured=st.booleans())
def test_fuzz_runner_manifest(exe, bundles, tmp_path_factory, data, internal, structured):
    inj, intl, csv = bundles
    src = intl if internal else inj
    work = tmp_path_factory.mktemp("manifest")
    for f in src.iterdir():
        if f.name != "manifest.json":
            os.link(f, work / f.name)
    seed = (src / "manifest.json").read_bytes()
    (work / "manifest.json").write_bytes(_manifest_edit(data, seed) if structured else mutate(data, seed))
    extra = () if internal else ("--context", 4, "--horizon", 1)
    check(run(exe, work, csv, *extra))


_NPY_TOKENS = [b"'<f8'", b"'<f4'", b"'>f4'", b"'<i4'", b"'|O'", b"True", b"False", b"()", b"(0,)", b"(128,)",
               b"(99999999999, 99999999999)", b"(18446744073709551615,)", b"(1, 2, 3, 4, 5, 6, 7, 8, 9)", b"(-1,)",
               b"", b"'shape':", b"{", b"\x00"]


def _replace_in_header(blob: bytes, start: int, end: int, token: bytes) -> bytes:
    """blob[start:end] = token inside a .npy header, keeping the ZIP offsets valid: the header's space padding
    (before its closing newline) absorbs the change in length where it can."""
    nl = blob.find(b"\n", end)
    pad = len(blob[:nl]) - len(blob[:nl].rstrip(b" ")) if nl >= 0 else 0
    grow = len(token) - (end - start)
    if nl < 0 or grow > pad:
        return blob[:start] + token + blob[end:]
    return blob[:start] + token + blob[end:nl - grow] + blob[nl:] if grow > 0 else \
        blob[:start] + token + blob[end:nl] + b" " * -grow + blob[nl:]


def _npz_edit(data, blob: bytes) -> bytes:
    b = bytearray(blob)
    kind = data.draw(st.sampled_from(["header", "zip_field", "bytes"]))
    if kind == "header":  # the .npy header dicts: dtype, order and shape text
        spots = list(re.finditer(rb"'<f[48]'|True|False|\([0-9, ]*\)", bytes(b)))
        if spots:
            m = data.draw(st.sampled_from(spots))
            return _replace_in_header(bytes(b), m.start(), m.end(), data.draw(st.sampled_from(_NPY_TOKENS)))
        return bytes(b)
    if kind == "zip_field":  # a 16/32-bit size, offset, count or length in a ZIP record
        sigs = [m.start() for m in re.finditer(rb"PK\x01\x02|PK\x03\x04|PK\x05\x06|PK\x06\x06|PK\x06\x07", bytes(b))]
        if sigs:
            at = data.draw(st.sampled_from(sigs)) + data.draw(st.integers(4, 44))
            width = data.draw(st.sampled_from([2, 4]))
            value = data.draw(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, len(b), len(b) + 1]))
            if at + width <= len(b):
                b[at:at + width] = struct.pack("<H" if width == 2 else "<I", value & (0xFFFF if width == 2 else
                                                                                    0xFFFFFFFF))
        return bytes(b)
    return mutate(data, bytes(b), max_edits=2)


@NATIVE
@given(data=st.data())
def test_fuzz_runner_npz(exe, bundles, tmp_path_factory, data):
    _, intl, csv = bundles
    work = tmp_path_factory.mktemp("npz")
    os.link(intl / "lm.gguf", work / "lm.gguf")
    (work / "io.npz").write_bytes(_npz_edit(data, (intl / "io.npz").read_bytes()))
    m = json.loads((intl / "manifest.json").read_text())
    m["files"]["io.npz"] = _file_entry(work / "io.npz")  # re-hashed: the parser, not the sha256 check, meets it
    (work / "manifest.json").write_text(json.dumps(m))
    check(run(exe, work, csv))


def _npz_bundle(intl: Path, work: Path, blob: bytes) -> Path:
    """A copy of the Internal bundle with io.npz replaced by ``blob``, re-hashed into the manifest."""
    work.mkdir()
    os.link(intl / "lm.gguf", work / "lm.gguf")
    (work / "io.npz").write_bytes(blob)
    m = json.loads((intl / "manifest.json").read_text())
    m["files"]["io.npz"] = _file_entry(work / "io.npz")
    (work / "manifest.json").write_text(json.dumps(m))
    return work


def test_crafted_npz_reach_the_parser(exe, bundles, tmp_path):
    """Crafted io.npz files fail inside npz.c with their own message (not at the sha256 check); the first two
    were a NaN forecast with exit 0 before npz.c required the exact data size and finite weights."""
    _, intl, csv = bundles
    blob = (intl / "io.npz").read_bytes()
    nan_w = io.BytesIO()
    np.savez(nan_w, **{k: np.where(np.arange(v.size).reshape(v.shape) == 3, np.nan, v)
                       for k, v in np.load(intl / "io.npz").items()})
    cases = {"f8_as_f4": (rb"'<f8'", b"'<f4'", "its shape and dtype need"),
             "int_dtype": (rb"'<f8'", b"'<i4'", "expected little-endian float32 or float64"),
             "huge_shape": (rb"\(\d+, 8\)", b"(99999999999, 99999999999)", "shape too large")}
    for name, (pattern, token, want) in cases.items():
        m = re.search(pattern, blob)
        r = run(exe, _npz_bundle(intl, tmp_path / name, _replace_in_header(blob, m.start(), m.end(), token)), csv)
        assert r.returncode == 1 and want in r.stderr.decode(), (name, r.stderr.decode())
    r = run(exe, _npz_bundle(intl, tmp_path / "nan", nan_w.getvalue()), csv)
    assert r.returncode == 1 and "holds NaN at flat index 3" in r.stderr.decode(), r.stderr.decode()


def test_non_finite_forecast_is_an_error(exe, bundles, tmp_path):
    """A head bias at float32's limit overflows in the de-normalization: main.c refuses to print inf."""
    _, intl, csv = bundles
    w = dict(np.load(intl / "io.npz"))
    w["head_b"] = np.full_like(w["head_b"], 3.4e38)
    blob = io.BytesIO()
    np.savez(blob, **w)
    r = run(exe, _npz_bundle(intl, tmp_path / "big_bias", blob.getvalue()), csv)
    assert r.returncode == 1 and "the forecast has 4 NaN/inf value(s) of 4" in r.stderr.decode(), r.stderr.decode()


@pytest.mark.parametrize("name,text,want", [
    ("tiny", "x0\n" + "".join(f"{(i % 5 + 1) * 1e-300}\n" for i in range(20)), "below float32's smallest normal"),
    ("huge", "x0\n" + "".join(f"{(i % 5 + 1) * 1e307}\n" for i in range(20)), "outside float32's range"),
    ("dup", "date,x0\n" + "".join(f"2020-01-{1 + i - (i == 7):02d},{i}\n" for i in range(20)),
     "repeats '2020-01-07' at data rows 7 and 8"),
])
def test_crafted_csv_refused_by_the_runner(exe, bundles, tmp_path, name, text, want):
    """The C twin of the Python input rule (series.c, csv.c): exit 1 with the reason, not a forecast."""
    inj, _, _ = bundles
    p = tmp_path / f"{name}.csv"
    p.write_text(text)
    r = run(exe, inj, p, "--context", 8, "--horizon", 1)
    assert r.returncode == 1 and want in r.stderr.decode(), r.stderr.decode()


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_runner_reads_semicolon_tab_and_pipe_csv(exe, bundles, tmp_path, sep):
    inj, _, _ = bundles
    p = tmp_path / "s.csv"
    p.write_bytes(_csv().replace(b",", sep.encode()))
    r = run(exe, inj, p, "--context", 8, "--horizon", 1)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().splitlines()[0] == "step,x0"
