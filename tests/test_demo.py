"""`alignts demo` end to end on a tiny backbone: every step runs and the report lands."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("llama_cpp")


def test_demo_smoke(tmp_path, capsys):
    from alignts.cli import main

    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--backbone", "tiny-bert", "--context", "32", "--horizon", "8",
               "--budget", "5", "--max-windows", "4", "--samples", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    for p in ("internal", "bridging", "injective"):
        assert (out / p / "manifest.json").is_file()
        assert (out / f"forecast_{p}.csv").read_text().count("\n") == 9  # header + H rows
    report = out / "report"
    for f in ("report.md", "report.json", "frontier.png", "forecast.png", "bench.json"):
        assert (report / f).stat().st_size > 0
    rows = json.loads((report / "report.json").read_text())
    text = json.dumps(rows)
    for name in ("internal", "bridging", "injective", "dlinear", "last_value"):
        assert name in text
    assert "demo done" in printed
