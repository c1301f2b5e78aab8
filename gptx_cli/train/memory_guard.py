"""Fail fast, before allocating, when the run cannot fit in the device's memory."""

from __future__ import annotations

from typing import Any

from gptx_cli.config.spec import RunSpec
from gptx_cli.errors import GptxError


def check_memory(spec: RunSpec, dist: Any, micro_batch_size: int | None = None) -> None:
    try:
        from gptx_cli.model.counts import memory_estimate  # noqa: F401
    except ImportError:
        return
