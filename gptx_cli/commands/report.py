from __future__ import annotations

from gptx_cli.errors import NotImplementedYet


def report_cmd() -> None:
    """Plot a training run's metrics."""
    raise NotImplementedYet("gptx report")
