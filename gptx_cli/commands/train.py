from __future__ import annotations

from gptx_cli.errors import NotImplementedYet


def train_cmd() -> None:
    """Train a model from a ModelZoo config."""
    raise NotImplementedYet("gptx train")


def continue_pretrain_cmd() -> None:
    """Continue pretraining from a checkpoint's weights."""
    raise NotImplementedYet("gptx continue-pretrain")
