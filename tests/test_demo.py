"""`make demo`'s command sequence (scripts/demo.sh) at a smaller size, checking each step's outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gptx_testing import REPO

pytestmark = pytest.mark.slow


# GPT-J runs the same commands in test_export_logits[gptj] and the eval/generate tests; one family
# here keeps the suite inside its 10-minute budget.
@pytest.mark.parametrize("arch", ["neox"])
def test_demo_sequence_trains_evaluates_generates_and_reports(tmp_path: Path, arch: str) -> None:
    env = {
        **os.environ,
        "DEMO_DIR": str(tmp_path),
        "DEMO_STEPS": "40",
        "DEMO_VOCAB": "512",
        "DEMO_MARGIN_NATS": "0",
        "ARCH": arch,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    res = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    # Each command is echoed before it runs.
    for cmd in [
        "gptx validate-config",
        "gptx preprocess",
        "gptx train",
        "gptx eval",
        "gptx generate",
        "gptx report",
    ]:
        assert f"$ {cmd}" in out
    data = tmp_path / "language/datasets/python_docs/hdf5_dataset"
    params = json.loads((data / "train" / "data_params.json").read_text())
    assert params["processing"]["vocab_size"] == 512
    assert params["post-process"]["n_examples"] > 1000
    assert list((data / "val").glob("*.h5"))
    model_dir = tmp_path / "model_dir" / f"demo_{arch}"
    ckpt = model_dir / "checkpoint_40"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()
    meta = json.loads((ckpt / "gptx.json").read_text())
    assert meta["model"]["name"] == ("gpt-neox" if arch == "neox" else "gptj")
    losses = [
        r["loss"] for r in map(json.loads, (model_dir / "metrics.jsonl").open()) if r["split"] == "train"
    ]
    assert losses[-1] < losses[0] - 0.5
    result = json.loads((model_dir / "eval_results" / "checkpoint_40.json").read_text())
    assert result["metrics"]["loss"] < 6.0  # ln(512) = 6.24: it learned something
    assert (model_dir / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "demo check:" in out and ": ok" in out
    assert "TensorBoard logs" in out and "Next:" in out
