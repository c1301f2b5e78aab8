"""`gptx preprocess --use-vsl` -> `gptx train` (use_vsl: true; the loss falls) -> `gptx eval`."""

from __future__ import annotations

import json
import random
from pathlib import Path

from train_helpers import WORDS, read_metrics, run_gptx, tiny_args


def _write_documents(path: Path, n: int, seed: int) -> None:
    """Documents of 4..40 words (cyclic word runs: learnable), so VSL samples hold several each."""
    rnd = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            k, length = rnd.randrange(len(WORDS)), rnd.randrange(4, 41)
            f.write(json.dumps({"text": " ".join(WORDS[(k + j) % len(WORDS)] for j in range(length))}) + "\n")


def test_preprocess_use_vsl_then_train_then_eval(tiny_data, tmp_path) -> None:
    tok = str(tiny_data["tokenizer"])
    for split, n, seed in (("train", 300, 2), ("val", 40, 3)):
        _write_documents(tmp_path / f"{split}.jsonl", n, seed)
        r = run_gptx(
            "preprocess", "-i", str(tmp_path / f"{split}.jsonl"), "-o", str(tmp_path / split),
            "--tokenizer", tok, "--max-seq-length", "32", "--use-vsl",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    data = {**tiny_data, "train": tmp_path / "train", "val": tmp_path / "val"}
    model_dir = tmp_path / "model_dir"
    vsl = ["--set", "train_dataloader.use_vsl=true", "--set", "val_dataloader.use_vsl=true"]
    r = run_gptx("train", *tiny_args(data, model_dir, *vsl, "--max-steps", "30"))
    assert r.returncode == 0, r.stderr
    assert "note: use_vsl: document-masked attention (sdpa_mask)" in r.stdout
    losses = read_metrics(model_dir)
    first = sum(losses[s]["loss"] for s in (1, 2, 3)) / 3
    last = sum(losses[s]["loss"] for s in (28, 29, 30)) / 3
    assert last < 0.8 * first, (first, last)

    config = tiny_args(data, model_dir, *vsl)
    r = run_gptx("eval", *config, "--checkpoint-path", str(model_dir / "checkpoint_25"), "--format", "json")
    assert r.returncode == 0, r.stderr
    result = json.loads((model_dir / "eval_results" / "checkpoint_25.json").read_text())
    assert result["metrics"]["loss"] < first

    # the same config over data without the VSL rows: one line naming the data dir
    plain = {**data, "train": tiny_data["train"]}
    r = run_gptx("train", *tiny_args(plain, tmp_path / "plain", *vsl, "--max-steps", "1"))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: use_vsl: data_dir {tiny_data['train']}")
    assert "Traceback" not in r.stderr
