"""Shared test utilities (imported by name: `from gptx_testing import run_gptx, shared_path`).

Reference data lives in ../shared (read-only), found through one env var, GPTX_SHARED, with that
default. In CI (GPTX_REQUIRE_SHARED=1, set by .ci/run) a missing asset fails the test instead of
skipping it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
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


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A directory that `build` fills once per test session, shared by pytest-xdist's workers: the first
    worker to ask builds it under a file lock, the others wait for it and reuse it (a session-scoped
    fixture alone is built once per worker). A failed build leaves no `.built` marker, so the next
    asker tries again (and fails the same way)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        path = tmp_path_factory.mktemp(name)
        build(path)
        return path
    root = tmp_path_factory.getbasetemp().parent  # the session's directory, above each worker's
    path = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / ".built").is_file():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            build(path)
            (path / ".built").touch()
    return path


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def write_text(path: Path, lines: int, seed: int) -> None:
    """Lines of 20 words cycling through WORDS: easy to learn, so the loss falls visibly in 50 steps."""
    rnd = random.Random(seed)
    with path.open("w") as f:
        for _ in range(lines):
            k = rnd.randrange(len(WORDS))
            f.write(" ".join(WORDS[(k + j) % len(WORDS)] for j in range(20)) + "\n")


def tiny_args(
    data: dict[str, Path], model_dir: Path, *extra: str, config: str = "tiny_gptj.yaml"
) -> list[str]:
    """`configs/tiny_gptj.yaml` shrunk further (hidden 32, the tiny tokenizer's vocabulary, msl 32) on
    the tiny data (the `tiny_data` fixture of tests/conftest.py). The docs' examples show the numbers
    of the reference run made with these (tests/test_docs.py, `docs_run`): change both together."""
    sets = [
        f"model.vocab_size={data['vocab_size']}",
        "model.hidden_size=32",
        "model.num_heads=2",
        "model.filter_size=64",
        f"train_dataloader.data_dir={data['train']}",
        f"val_dataloader.data_dir={data['val']}",
        "logging.log_steps=1",
        "loop.eval_steps=2",
    ]
    args = [str(REPO / "configs" / config), "--model-dir", str(model_dir)]
    for s in sets:
        args += ["--set", s]
    return [*args, *extra]


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
