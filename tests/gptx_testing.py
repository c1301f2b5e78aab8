"""Shared test utilities (imported by name: `from gptx_testing import run_gptx, shared_path`).

Reference data lives in ../shared (read-only), found through one env var, GPTX_SHARED, with that
default. In CI (GPTX_REQUIRE_SHARED=1, set by .ci/run) a missing asset fails the test instead of
skipping it.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gptx_cli.config.spec import ModelConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPTX_SHARED", str(REPO.parent / "shared"))).resolve()


def shared_path(*parts: str) -> Path:
    """A path under ../shared; skips locally (fails in CI) when it is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        msg = f"reference asset missing: {p} (set GPTX_SHARED)"
        if os.environ.get("GPTX_REQUIRE_SHARED") or os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return p


def run_gptx(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300):
    """Run the real `gptx` CLI in a subprocess; returns CompletedProcess with text stdout/stderr."""
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "gptx_cli.cli", *args],
        cwd=str(cwd) if cwd else None,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# A tiny GPT-J and GPT-NeoX for model-level tests (fp32, no dropout).
TINY = ModelConfig(
    name="gptj",
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_heads=4,
    filter_size=64,
    max_position_embeddings=64,
    rotary_dim=4,
    use_ffn_bias=True,
    use_bias_in_output=True,
    share_embedding_weights=False,
    use_projection_bias_in_attention=False,
    use_ffn_bias_in_attention=False,
    embedding_dropout_rate=0.0,
    attention_dropout_rate=0.0,
    residual_dropout_rate=0.0,
)
NEOX_TINY = dataclasses.replace(
    TINY, name="gpt-neox", use_untied_layer_norm=True, use_projection_bias_in_attention=True, rotary_dim=8
)
