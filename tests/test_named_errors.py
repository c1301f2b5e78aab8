"""Issue #19 problem 10/11: inputs that ended in 'internal error: <Type>' (or were silently accepted) are
one-line errors naming the file, the sample or the flag."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from gptx_testing import REPO, run_gptx

from gptx_cli.config.spec import DataSpec
from gptx_cli.data.hdf5 import mark_complete, write_sample_file
from gptx_cli.data.loader import build_dataloader
from gptx_cli.errors import DataError

MSL = 8


def _data(tmp_path, mutate, dtype=np.int32):
    d = tmp_path / "d"
    d.mkdir()
    ids = np.arange(4 * (MSL + 1), dtype=np.int64).reshape(4, MSL + 1) % 50
    samples = np.stack([ids[:, :-1], np.ones((4, MSL), dtype=np.int64), ids[:, 1:]], axis=1)
    mutate(samples)
    import h5py

    if np.dtype(dtype).kind == "f":  # write_sample_file writes int32: a foreign float file, by hand
        with h5py.File(d / "data-0.h5", "w") as f:
            f.create_dataset("data", data=samples.astype(dtype))
            f.attrs["n_examples"] = len(samples)
    else:
        write_sample_file(d / "data-0.h5", samples.astype(dtype))
    mark_complete(d)
    return d


def _first_batch(d):
    return next(iter(build_dataloader(DataSpec(data_dir=[str(d)], batch_size=4), infinite=False)))


@pytest.mark.parametrize("value", [-1, -100])
def test_negative_token_ids_name_the_file_and_sample(tmp_path, value):
    def mutate(s):
        s[2, 0, 3] = value

    d = _data(tmp_path, mutate)
    with pytest.raises(DataError, match=rf"data-0.h5: sample 2: input_ids holds token id {value}"):
        _first_batch(d)


def test_negative_labels_name_the_file_and_sample(tmp_path):
    def mutate(s):
        s[1, 2, 0] = -100

    with pytest.raises(DataError, match=r"data-0.h5: sample 1: labels holds token id -100"):
        _first_batch(_data(tmp_path, mutate))


def test_attention_mask_values_other_than_0_and_1_are_refused(tmp_path):
    def mutate(s):
        s[3, 1, 5] = 2

    with pytest.raises(DataError, match=r"data-0.h5: sample 3: attention_mask holds 2"):
        _first_batch(_data(tmp_path, mutate))


def test_float_token_ids_are_refused_not_truncated(tmp_path):
    d = _data(tmp_path, lambda s: None, dtype=np.float32)
    with pytest.raises(DataError, match=r"data-0.h5: dataset 'data' holds float32 values"):
        _first_batch(d)


def test_the_same_data_error_from_the_cli_is_one_line(tmp_path):
    def mutate(s):
        s[0, 0, 0] = -100

    d = _data(tmp_path, mutate)
    r = run_gptx(
        "train", str(REPO / "configs" / "tiny_neox.yaml"), "--model-dir", str(tmp_path / "m"), "--max-steps", "1",
        "--set", f"train_dataloader.data_dir={d}", "--set", f"val_dataloader.data_dir={d}", "--set", "loop.eval_frequency=100000",
        "--set", f"model.max_position_embeddings={MSL}", "--set", "train_dataloader.batch_size=4", "--set", "val_dataloader.batch_size=4",
    )  # fmt: skip
    assert r.returncode == 1
    assert "sample 0: input_ids holds token id -100" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_binary_stdin_to_generate_is_a_named_error(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "gptx_cli.cli", "generate", "--checkpoint-path", str(tmp_path)],
        input=b"\xff\xfe\x00binary", capture_output=True,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.decode().startswith("error: the prompt on stdin is not UTF-8 text")


def test_a_binary_metrics_file_is_a_named_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1}\n\x89PNG\r\n\x1a\n\x00\x00')
    r = run_gptx("report", str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: {tmp_path / 'metrics.jsonl'}:2: not UTF-8 text")


def test_a_malformed_gptx_json_is_reported_as_malformed_not_missing(tmp_path):
    from gptx_cli import build_model, load_model
    from gptx_cli.checkpoint import save_checkpoint_dir
    from gptx_cli.config.spec import ModelConfig
    from gptx_cli.errors import CheckpointError

    cfg = ModelConfig(
        name="gpt-neox", vocab_size=64, hidden_size=16, num_hidden_layers=1, num_heads=2, filter_size=32,
        max_position_embeddings=32,
    )  # fmt: skip
    ckpt = save_checkpoint_dir(tmp_path / "checkpoint_1", build_model(cfg).state_dict(), cfg, step=1)
    (ckpt / "gptx.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="gptx.json: corrupt checkpoint metadata"):
        load_model(ckpt)
    r = run_gptx(
        "eval",
        "--checkpoint-path",
        str(ckpt),
        "--tasks",
        "lambada_tiny",
        "--tasks-dir",
        str(REPO / "tests/eval/data"),
    )
    assert r.returncode == 1 and "gptx.json: corrupt checkpoint metadata" in r.stderr, r.stderr
