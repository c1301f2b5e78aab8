"""`--nproc 2` on CPU (gloo): DDP and FSDP2 reproduce one process's losses for the same global batch,
checkpoints move between rank counts (1 -> 2 FSDP ranks -> 1), and FSDP2, which builds the model on the
meta device and materialises only each process's shards, starts from exactly a single process's weights
(fresh or loaded from a Hugging Face dir)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import read_metrics, run_gptx, tiny_args

from gptx_cli.api import load_model

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def assert_same_losses(got: dict, reference: dict, steps: range) -> None:
    assert sorted(s for s in got if s in steps) == list(steps)
    for s in steps:
        assert got[s]["loss"] == pytest.approx(reference[s]["loss"], abs=1e-5), s


def test_ddp_two_processes_match_one_process(tiny_data, reference_run, tmp_path):
    model_dir = tmp_path / "ddp"
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, "--nproc", "2", "--max-steps", "4"))
    assert r.returncode == 0, r.stderr
    assert "on 2 x cpu (ddp)" in r.stdout
    assert_same_losses(read_metrics(model_dir), read_metrics(reference_run), range(1, 5))


def test_fsdp_matches_one_process_and_resumes_across_rank_counts(tiny_data, reference_run, tmp_path):
    model_dir = tmp_path / "fsdp"
    fsdp = ("--nproc", "2", "--strategy", "fsdp")
    reference = read_metrics(reference_run)
    # steps 1-2 on 2 FSDP2 ranks from scratch
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, *fsdp, "--max-steps", "2"))
    assert r.returncode == 0, r.stderr
    assert "on 2 x cpu (fsdp)" in r.stdout
    assert (model_dir / "checkpoint_2" / "optim").is_dir()  # sharded optimizer state (DCP)
    assert_same_losses(read_metrics(model_dir), reference, range(1, 3))
    # steps 3-4 on 1 process from the 2-rank checkpoint
    r = run_gptx("train", *tiny_args(tiny_data, model_dir, "--max-steps", "4"))
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stdout and "checkpoint_2" in r.stdout
    assert "UserWarning" not in r.stderr, r.stderr  # issue #19: DCP's single-process warning is a note
    assert "sharded optimizer state is loaded into this one process" in r.stdout
    assert_same_losses(read_metrics(model_dir), reference, range(3, 5))
    # steps 5-6 on 2 FSDP2 ranks from the 1-process checkpoint (full optimizer state, sharded on load)
    r = run_gptx(
        "train", *tiny_args(tiny_data, model_dir, *fsdp, "--max-steps", "6"),
        "--checkpoint-path", str(model_dir / "checkpoint_4"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert_same_losses(read_metrics(model_dir), reference, range(5, 7))


def initial_weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "checkpoint_0" / "model.safetensors")


def assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


def test_fsdp_initial_weights_equal_one_process(tiny_data, tmp_path):
    # an odd vocabulary (the data's + 7): the embedding and head split unevenly over the 2 ranks
    args = ("--set", f"model.vocab_size={tiny_data['vocab_size'] + 7}",
            "--set", "checkpoint.save_initial_checkpoint=true", "--max-steps", "1")  # fmt: skip
    r = run_gptx("train", *tiny_args(tiny_data, tmp_path / "one", *args))
    assert r.returncode == 0, r.stderr
    r = run_gptx(
        "train", *tiny_args(tiny_data, tmp_path / "fsdp", *args, "--nproc", "2", "--strategy", "fsdp")
    )
    assert r.returncode == 0, r.stderr
    assert "on 2 x cpu (fsdp)" in r.stdout
    one = initial_weights(tmp_path / "one")
    assert one["embed.weight"].std() > 0  # initialised, not empty memory
    assert_same_weights(initial_weights(tmp_path / "fsdp"), one)


@pytest.fixture
def hf_neox_dir(tiny_data, tmp_path):
    """A tiny random GPT-NeoX saved by transformers, with the tiny data's vocabulary."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=tiny_data["vocab_size"], max_position_embeddings=128, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, rotary_pct=0.25, hidden_act="gelu",
        use_parallel_residual=True, tie_word_embeddings=False, hidden_dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    path = tmp_path / "hf_neox"
    GPTNeoXForCausalLM(cfg).save_pretrained(path)
    return path


def test_fsdp_continue_pretrain_from_hf_matches_one_process(tiny_data, hf_neox_dir, tmp_path):
    neox = ("--set", "checkpoint.save_initial_checkpoint=true", "--max-steps", "1", "--checkpoint-path",
            str(hf_neox_dir))  # fmt: skip
    runs = {"one": (), "fsdp": ("--nproc", "2", "--strategy", "fsdp")}
    for name, extra in runs.items():
        r = run_gptx(
            "continue-pretrain",
            *tiny_args(tiny_data, tmp_path / name, *neox, *extra, config="tiny_neox.yaml"),
        )
        assert r.returncode == 0, r.stderr
    converted = load_model(hf_neox_dir).state_dict()
    assert_same_weights(initial_weights(tmp_path / "one"), converted)
    assert_same_weights(initial_weights(tmp_path / "fsdp"), converted)
    assert_same_losses(read_metrics(tmp_path / "fsdp"), read_metrics(tmp_path / "one"), range(1, 2))
