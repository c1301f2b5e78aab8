"""Issue #19 problem 4 and 11: flags that override config values get the YAML key's checks (naming the
flag); NaN / inf are refused where they make no sense; a YAML alias bomb is a one-line error."""

from __future__ import annotations

import pytest
from gptx_testing import REPO, run_gptx

TINY = str(REPO / "configs" / "tiny_neox.yaml")


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--micro-batch-size", "-4", "must be >= 1, got -4"),
        ("--micro-batch-size", "0", "must be >= 1, got 0"),
        ("--strategy", "bogus", "'bogus' is not one of ddp, fsdp"),
        ("--nproc", "0", "must be >= 1, got 0"),
        ("--nproc", "-2", "must be >= 1, got -2"),
        ("--max-steps", "0", "must be >= 1, got 0"),
        ("--max-steps", "-3", "must be >= 1, got -3"),
    ],
)
def test_train_flags_get_the_config_keys_checks(tmp_path, flag, value, message):
    r = run_gptx("train", TINY, "--model-dir", str(tmp_path / "m"), flag, value)
    assert r.returncode == 2
    assert r.stderr == f"error: {flag} {value}: {message}\n"
    assert not (tmp_path / "m").exists()


def test_the_same_values_in_yaml_are_refused_too(tmp_path):
    r = run_gptx("train", TINY, "--model-dir", str(tmp_path / "m"), "--set", "loop.max_steps=-3")
    assert r.returncode == 1 and "max_steps: must be >= 1, got -3" in r.stderr


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("layer_norm_epsilon: 1.0e-05", "layer_norm_epsilon: .nan", "model.layer_norm_epsilon"),
        ("weight_decay: 0.01", "weight_decay: .inf", "AdamW.weight_decay"),
        ("initial_learning_rate: 0.0", "initial_learning_rate: .nan", "initial_learning_rate"),
        ("std: 0.125", "std: -.inf", "output_layer_initializer.std"),
    ],
)
def test_validate_config_refuses_nan_and_inf(tmp_path, old, new, key):
    cfg = tmp_path / "c.yaml"
    text = (REPO / "configs" / "tiny_neox.yaml").read_text()
    assert old in text
    cfg.write_text(text.replace(old, new, 1))
    r = run_gptx("validate-config", str(cfg))
    assert r.returncode == 1
    assert f"{key}: must be" in r.stdout + r.stderr  # the schema (std > 0) or the finite rule


def test_a_yaml_alias_bomb_is_a_one_line_error(tmp_path):
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        rows.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(rows) + "\n")  # ~300 bytes, 9^9 strings when expanded
    assert len(bomb.read_bytes()) < 400
    r = run_gptx("validate-config", str(bomb), timeout=120)
    assert r.returncode == 1
    assert f"{bomb}:" in r.stdout + r.stderr and "alias bomb" in r.stdout + r.stderr


@pytest.mark.parametrize("flag", ["--temperature", "--top-p"])
def test_generate_refuses_nan_sampling_settings(tmp_path, flag):
    """--temperature nan was 'internal error'."""
    r = run_gptx("generate", "--checkpoint-path", str(tmp_path), "--prompt", "x", flag, "nan")
    assert r.returncode == 2 and r.stderr == f"error: {flag} nan: must be a finite number, got nan\n"
