"""Test cases for libalignts (native/tests/test_libalignts.c): tiny bundles of all three paradigms fitted with the
real fit functions, the Python runtime's forecasts on them (GGUF variants, the path libalignts runs), and damaged
or fuzzed copies that must be refused.

    python scripts/native_cases.py OUT      # writes OUT/cases.txt, OUT/data.csv, OUT/bundles/, OUT/damaged/

cases.txt (whitespace separated; numbers written with 17 significant digits):
    forecast NAME BUNDLE B C L H TOL NQ  x ... q ... y ... yq ...   (x [B, C, L], q [NQ], y [B, C, H],
                                                                   yq [B, C, H, NQ], Python's raw-unit output)
    refuse NAME BUNDLE PHRASE                                      (open/plan/forecast must fail, the message
                                                                   must hold PHRASE)
TOL is relative to max(1, |y|): 1e-4 for Internal / Bridging (llama.cpp hidden states; measured ~1e-7), 1e-12
for greedy Injective (the same ids, so the same digits). Used by scripts/native (x86-64 ctest, valgrind, and the
aarch64 run under qemu). Needs torch, transformers, peft, onnxruntime and llama-cpp-python (the export extras).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout: this alignts, whatever the venv has installed
L, H = 48, 12
QUANTILES = (0.1, 0.5, 0.9)


def _data(out: Path) -> Path:
    import pandas as pd

    n = 400
    i = np.arange(n)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"date": pd.date_range("2022-01-01", periods=n, freq="h"),
                       "x": np.sin(2 * np.pi * i / 24) + 0.1 * rng.standard_normal(n),
                       "y": 3 + np.cos(2 * np.pi * i / 12) + 0.1 * rng.standard_normal(n)})
    p = out / "data.csv"
    df.to_csv(p, index=False)
    return p


def _train():
    from alignts.export.train import TrainConfig

    return TrainConfig(epochs=1, batch_size=16, max_train_windows=32, max_val_windows=16, threads=2)


def internal(csv: Path, out: Path, linear_skip: bool = False) -> Path:
    from alignts.export.fit_internal import FitInternalConfig, fit_internal
    from alignts.export.internal import InternalConfig

    fit_internal(FitInternalConfig(
        data=str(csv), out=str(out), backbone="tiny-gpt2", int8=False, gguf_dtypes=("f32",),
        model=InternalConfig(context_len=L, horizon=H, patch_len=16, stride=8, head_init="default",
                             linear_skip=linear_skip), train=_train()))
    return out


def bridging(csv: Path, out: Path, linear_skip: bool = False) -> Path:
    from alignts.export.bridging import BridgingConfig
    from alignts.export.fit_bridging import FitBridgingOptions, fit_bridging

    cfg = BridgingConfig(context_len=L, horizon=H, patch_len=16, stride=8, d_model=16, n_heads=4, d_keys=8,
                         n_prototypes=16, d_ff=16, description="native test series.", linear_skip=linear_skip)
    fit_bridging(FitBridgingOptions(data=str(csv), out=str(out), backbone="tiny-bert", n_check=2), cfg, _train(),
                 progress=False)
    return out


def injective(out: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_injective_utils import tiny_numeric_gpt2

    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective

    hf = tiny_numeric_gpt2(out.parent / "injective-hf", seed=0)
    fit_injective(out, InjectiveFitConfig(model=str(hf), backends=("gguf",), context_len=40, horizon=8, samples=3,
                                          greedy=True))
    return out


def _windows(csv: Path, cols: list[str], length: int, b: int) -> np.ndarray:
    """x [b, C, length]: the last b windows of the CSV's columns, 24 rows apart."""
    import pandas as pd

    v = pd.read_csv(csv)[cols].to_numpy(dtype=np.float64).T  # [C, T]
    return np.stack([v[:, v.shape[1] - length - 24 * k: v.shape[1] - 24 * k] for k in range(b)])


def _line(tag: str, a) -> str:
    return tag + " " + " ".join(f"{float(v):.17g}" for v in np.asarray(a, dtype=np.float64).reshape(-1)) + "\n"


def forecast_case(name: str, bundle: Path, root: Path, csv: Path, b: int, tol: float) -> str:
    """One 'forecast' case: the Python runtime on the bundle's first GGUF variant."""
    from alignts.runtime import load

    f = load(bundle)
    m = json.loads((bundle / "manifest.json").read_text())
    variant = next(v["name"] for v in m["variants"] if v["backend"] == "gguf")
    f.plan(variant=variant, batch_size=b)
    paradigm = m["paradigm"]
    cols = ["x", "y"] if paradigm != "injective" else ["x"]
    x = _windows(csv, cols, f.context_len, b)
    levels = QUANTILES if (paradigm == "injective" or m["config"].get("conformal")) else ()
    fc = f.forecast(x, quantiles=levels or None)
    point = fc.median if paradigm == "injective" else fc.mean
    q = np.zeros(0) if not levels else fc.quantiles
    hh = point.shape[-1]
    return (f"forecast {name} {bundle.relative_to(root)} {b} {len(cols)} {x.shape[-1]} {hh} {tol:g} {len(levels)}\n"
            + _line("x", x) + _line("q", levels) + _line("y", point) + _line("yq", q))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _reads(m: dict) -> list[str]:
    """The files the first GGUF variant reads (its list, the files its extra names, Bridging's trained tensors):
    a changed byte in any of them must be refused. Files it never reads (another variant's) are not checked, by
    libalignts as by the Python runtime."""
    v = next(v for v in m["variants"] if v["backend"] == "gguf")
    names = set(v["files"]) | {x for x in v.get("extra", {}).values() if isinstance(x, str) and x in m["files"]}
    if m["paradigm"] == "internal":
        names.add("io.npz")
    if m["paradigm"] == "bridging":
        names |= {"torch_trained.safetensors", "head.npz"}
    return sorted(names & set(m["files"]))


def damaged_cases(root: Path, bundles: dict[str, Path], seed: int = 0) -> list[str]:
    """'refuse' cases: tampered, truncated, missing, linked and fuzzed copies."""
    out, dmg = [], root / "damaged"
    rng = np.random.default_rng(seed)

    def rel(p: Path) -> str:
        return str(p.relative_to(root))

    it = bundles["internal"]
    m = json.loads((it / "manifest.json").read_text())
    gguf = next(v for v in m["variants"] if v["backend"] == "gguf")["files"][0]

    b = _copy(it, dmg / "tampered-gguf")
    raw = bytearray((b / gguf).read_bytes())
    raw[-1] ^= 0xFF
    (b / gguf).write_bytes(bytes(raw))
    out.append(f"refuse tampered_gguf {rel(b)} does not match\n")

    b = _copy(it, dmg / "truncated-npz")
    (b / "io.npz").write_bytes((b / "io.npz").read_bytes()[:-10])
    out.append(f"refuse truncated_npz {rel(b)} truncated\n")

    b = _copy(it, dmg / "broken-json")
    text = (b / "manifest.json").read_text()
    (b / "manifest.json").write_text(text[: len(text) // 2])
    out.append(f"refuse broken_manifest {rel(b)} not valid JSON\n")

    b = _copy(it, dmg / "missing-file")
    (b / "io.npz").unlink()
    out.append(f"refuse missing_file {rel(b)} is missing\n")

    b = _copy(it, dmg / "linked-file")
    shutil.move(b / "io.npz", dmg / "io-elsewhere.npz")
    os.symlink(dmg / "io-elsewhere.npz", b / "io.npz")
    out.append(f"refuse linked_file {rel(b)} symbolic link\n")

    # Bridging: no backbone with the manifest's hash anywhere, and a tampered backbone table
    alone = dmg / "no-backbone" / "bridging"
    _copy(bundles["bridging"], alone)
    bm = json.loads((alone / "manifest.json").read_text())
    bm["backbone"]["path"] = "nowhere"
    (alone / "manifest.json").write_text(json.dumps(bm))
    out.append(f"refuse bridging_no_backbone {rel(alone)} no backbone bundle with that hash\n")
    tb = dmg / "tampered-table"
    _copy(bundles["bridging"], tb / "bridging")
    _copy(bundles["bridging"].parent / "backbones", tb / "backbones")
    bb = next(p for p in (tb / "backbones").iterdir() if (p / "word_embeddings.npy").exists())
    raw = bytearray((bb / "word_embeddings.npy").read_bytes())
    raw[-3] ^= 0x55
    (bb / "word_embeddings.npy").write_bytes(bytes(raw))
    tm = json.loads((tb / "bridging" / "manifest.json").read_text())
    tm["backbone"]["path"] = "../backbones/" + bb.name
    (tb / "bridging" / "manifest.json").write_text(json.dumps(tm))
    out.append(f"refuse bridging_tampered_table {rel(tb / 'bridging')} does not match\n")

    # fuzz: the manifest cut at random points, random bytes as the manifest, one random byte of a sealed file flipped
    for paradigm, src in bundles.items():
        text = (src / "manifest.json").read_bytes()
        for k in range(3):
            b = _copy(src, dmg / f"fuzz-{paradigm}-cut{k}")
            (b / "manifest.json").write_bytes(text[: int(rng.integers(1, len(text) - 2))])
            out.append(f"refuse fuzz_{paradigm}_cut{k} {rel(b)} manifest\n")
        b = _copy(src, dmg / f"fuzz-{paradigm}-noise")
        (b / "manifest.json").write_bytes(rng.integers(0, 256, size=len(text) // 4, dtype=np.uint8).tobytes())
        out.append(f"refuse fuzz_{paradigm}_noise {rel(b)} manifest\n")
        files = _reads(json.loads(text))
        for k in range(3):
            b = _copy(src, dmg / f"fuzz-{paradigm}-flip{k}")
            name = files[int(rng.integers(len(files)))]
            raw = bytearray((b / name).read_bytes())
            raw[int(rng.integers(len(raw)))] ^= int(rng.integers(1, 256))
            (b / name).write_bytes(bytes(raw))
            out.append(f"refuse fuzz_{paradigm}_flip{k} {rel(b)} {name}\n")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0]).resolve()
    if root.exists():
        shutil.rmtree(root)
    (root / "bundles").mkdir(parents=True)
    csv = _data(root)
    bundles = {"internal": internal(csv, root / "bundles" / "internal"),
               "internal_skip": internal(csv, root / "bundles" / "internal_skip", linear_skip=True),
               "bridging": bridging(csv, root / "bundles" / "bridging"),
               "bridging_skip": bridging(csv, root / "bundles" / "bridging_skip", linear_skip=True),
               "injective": injective(root / "bundles" / "injective")}
    lines = [forecast_case("internal_b2", bundles["internal"], root, csv, 2, 1e-4),
             forecast_case("internal_skip_b1", bundles["internal_skip"], root, csv, 1, 1e-4),
             forecast_case("bridging_b2", bundles["bridging"], root, csv, 2, 1e-4),
             forecast_case("bridging_skip_b1", bundles["bridging_skip"], root, csv, 1, 1e-4),
             forecast_case("injective_b2", bundles["injective"], root, csv, 2, 1e-12)]
    lines += damaged_cases(root, {k: bundles[k] for k in ("internal", "bridging", "injective")})
    (root / "cases.txt").write_text("".join(lines))
    print(f"{len(lines)} cases in {root / 'cases.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
