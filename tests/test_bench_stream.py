"""`alignts bench stream` on small sizes: every row measured side by side, the RSS run reports its samples."""

import json

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("psutil")

from alignts.cli import main  # noqa: E402


def test_bench_stream_quick(tmp_path, capsys):
    from alignts.export.fit_injective import InjectiveFitConfig, fit_injective

    inj = fit_injective(tmp_path / "inj", InjectiveFitConfig(samples=2))
    out = tmp_path / "r.json"
    assert main(["bench", "stream", str(inj), "--quick", "--repeats", "2", "--horizon", "2", "--lengths", "32",
                 "--json", str(out), "--md", str(tmp_path / "r.md")]) == 0
    r = json.loads(out.read_text())
    assert [(row["mode"], row["L"], row["engine"]) for row in r["rows"]] == [("sampled", 32, "kv-injective"),
                                                                              ("prompt", 32, "kv-injective")]
    for row in r["rows"]:
        assert row["stream_ms"] > 0 and row["batch_ms"] > 0 and row["update_us"] > 0
    assert "| inj | prompt" in (tmp_path / "r.md").read_text()
