from __future__ import annotations

import json

from gptx_testing import run_gptx


def _write_metrics(model_dir, n=20):
    model_dir.mkdir()
    with open(model_dir / "metrics.jsonl", "w") as f:
        for step in range(1, n + 1):
            f.write(
                json.dumps(
                    {"step": step, "split": "train", "loss": 5.0 / step, "lr": 1e-3, "tokens_per_s": 1000.0}
                )
                + "\n"
            )
        f.write(json.dumps({"step": n, "split": "eval", "loss": 0.5}) + "\n")


def test_report_writes_a_png_of_the_run(tmp_path):
    _write_metrics(tmp_path / "run")
    res = run_gptx("report", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    png = tmp_path / "run" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_report_names_the_malformed_metrics_line(tmp_path):
    _write_metrics(tmp_path / "run", n=3)
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    res = run_gptx("report", str(tmp_path / "run"))
    assert res.returncode == 1
    assert "metrics.jsonl:5:" in res.stderr
    assert "Traceback" not in res.stderr


def test_report_on_a_directory_without_metrics_is_a_usage_error(tmp_path):
    res = run_gptx("report", str(tmp_path))
    assert res.returncode == 2
    assert "no metrics file" in res.stderr
