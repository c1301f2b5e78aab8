from __future__ import annotations

from conftest import run_gptx


def test_version_prints_package_version():
    res = run_gptx("--version")
    assert res.returncode == 0
    assert res.stdout.strip().startswith("gptx 0.")


def test_every_subcommand_has_help():
    for cmd in ["validate-config", "preprocess", "train", "continue-pretrain", "eval", "generate", "convert"]:
        res = run_gptx(cmd, "--help")
        assert res.returncode == 0, (cmd, res.stderr)
        assert "Usage" in res.stdout
