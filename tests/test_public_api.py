"""The public surface keeps its behaviour: `gptx --help` and every subcommand's `--help` (found from the
Typer app, so a new command is covered), and the Python API calls docs/python-api.md documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from gptx_testing import run_gptx

import gptx_cli
from gptx_cli.checkpoint import save_checkpoint_dir
from gptx_cli.config import load_run_spec
from gptx_cli.errors import CheckpointError, UsageError

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tiny_neox.yaml"


def _subcommands() -> list[list[str]]:
    from typer.main import get_command

    from gptx_cli.cli import app

    root = get_command(app)
    out = []
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        out += [[name, sub] for sub in subs] if subs else [[name]]
    return out


def test_help_of_gptx_and_of_every_subcommand():
    res = run_gptx("--help")
    assert res.returncode == 0 and "Usage" in res.stdout, res.stderr
    commands = _subcommands()
    names = {c[0] for c in commands}
    assert {"validate-config", "preprocess", "train", "continue-pretrain", "eval", "generate"} <= names
    assert ["convert", "checkpoint"] in commands and ["convert", "config"] in commands
    from typer.testing import CliRunner

    from gptx_cli.cli import app

    for argv in commands:  # in-process: the same app `gptx` runs, without an interpreter start each
        res = CliRunner().invoke(app, [*argv, "--help"])
        assert res.exit_code == 0, (argv, res.output)
        assert "Usage" in res.output and "--help" in res.output, argv


def test_documented_python_api(tmp_path):
    spec = load_run_spec(CONFIG)
    from_path = gptx_cli.build_model(str(CONFIG))  # seed from the config
    from_spec = gptx_cli.build_model(spec)
    from_cfg = gptx_cli.build_model(spec.model, device="cpu", seed=3)
    assert from_path.training and isinstance(from_path, torch.nn.Module)
    same = zip(from_path.state_dict().values(), from_spec.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in same)
    assert not torch.equal(from_cfg.embed.weight, from_path.embed.weight)  # seed=3, not the config's
    assert torch.equal(gptx_cli.build_model(CONFIG, seed=3).embed.weight, from_cfg.embed.weight)

    model_dir = tmp_path / "model_dir"
    save_checkpoint_dir(model_dir / "checkpoint_1", from_cfg.state_dict(), spec.model, step=1)
    save_checkpoint_dir(model_dir / "checkpoint_2", from_path.state_dict(), spec.model, step=2)
    ids = torch.tensor([[50256, 464, 3290, 318]])
    one = gptx_cli.load_model(str(model_dir / "checkpoint_1"))
    latest = gptx_cli.load_model(model_dir)  # a model_dir: its latest checkpoint
    bf16 = gptx_cli.load_model(model_dir, dtype="bfloat16")
    assert not latest.training and bf16.embed.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(latest(ids), from_path.eval()(ids))
        assert torch.equal(one(ids), from_cfg.eval()(ids))
        assert latest(ids).shape == (1, 4, spec.model.vocab_size)

    hf_dir = tmp_path / "hf"
    res = run_gptx("convert", "checkpoint", str(model_dir), "--output-dir", str(hf_dir))
    assert res.returncode == 0, res.stderr
    assert json.loads((hf_dir / "config.json").read_text())["model_type"] == "gpt_neox"
    with torch.no_grad():
        assert torch.allclose(gptx_cli.load_model(hf_dir)(ids), latest(ids), atol=1e-5)

    with pytest.raises(UsageError, match="unknown dtype"):
        gptx_cli.load_model(model_dir, dtype="float7")
    with pytest.raises(UsageError, match="expected a config path, RunSpec or ModelConfig"):
        gptx_cli.build_model(42)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a model directory"):
        gptx_cli.load_model(tmp_path / "empty")
