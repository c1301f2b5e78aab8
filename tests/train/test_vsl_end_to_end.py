"""`gptx preprocess --use-vsl` -> `gptx train` (use_vsl: true; the loss falls) -> `gptx eval`; and fine-tuning VSL."""

from __future__ import annotations

import json
import random
from pathlib import Path

import h5py
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


def test_finetuning_vsl_trains_on_each_example_alone(tiny_data, tmp_path) -> None:
    """A ModelZoo fine-tuning YAML with `dataset.use_vsl` ([n, 5, msl], several examples per sample,
    VSLFinetuningTokenGenerator) trains with use_vsl: true; the loss falls."""
    rnd = random.Random(5)
    for split, n in (("train", 400), ("val", 40)):
        with (tmp_path / f"{split}.jsonl").open("w") as f:
            for _ in range(n):
                k = rnd.randrange(len(WORDS))
                f.write(
                    json.dumps({"prompt": WORDS[k], "completion": " " + WORDS[(k + 1) % len(WORDS)]}) + "\n"
                )
        (tmp_path / f"{split}.yaml").write_text(
            f"setup:\n  data: {{source: {tmp_path / split}.jsonl}}\n  output_dir: {tmp_path / split}\n"
            f"  mode: finetuning\nprocessing:\n  huggingface_tokenizer: {tiny_data['tokenizer']}\n"
            "  max_seq_length: 32\n  min_sequence_len: 2\n  read_hook: prompt_completion_text_read_hook\n"
            "  read_hook_kwargs: {prompt_key: prompt, completion_key: completion}\n"
            "dataset:\n  use_vsl: true\n  sep_token: null\n"
        )
        r = run_gptx("preprocess", "--config", str(tmp_path / f"{split}.yaml"))
        assert r.returncode == 0, r.stderr
    with h5py.File(next((tmp_path / "train").glob("*.h5"))) as h5:
        samples = h5["data"][()]
    starts = (samples[:, 4] == 0) & (samples[:, 1] + samples[:, 3] > 0)  # each example's first position
    assert samples.shape[1:] == (5, 32) and (starts.sum(1) >= 2).mean() > 0.9
    # no example's first token is a target of the one before: the loss mask is aligned with labels
    assert not samples[:, 1, :-1][starts[:, 1:]].any()
    data = {**tiny_data, "train": tmp_path / "train", "val": tmp_path / "val"}
    model_dir = tmp_path / "model_dir"
    vsl = ["--set", "train_dataloader.use_vsl=true", "--set", "val_dataloader.use_vsl=true"]
    r = run_gptx("train", *tiny_args(data, model_dir, *vsl, "--max-steps", "30"))
    assert r.returncode == 0, r.stderr
    losses = read_metrics(model_dir)
    first = sum(losses[s]["loss"] for s in (1, 2, 3)) / 3
    last = sum(losses[s]["loss"] for s in (28, 29, 30)) / 3
    assert last < 0.8 * first, (first, last)
