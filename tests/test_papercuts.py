"""Issue #19's first-run papercuts: docs that say what a first run needs, and CLI details."""

from __future__ import annotations

import re

import pytest
from gptx_testing import REPO, run_gptx

DOCS = REPO / "docs"


def test_readme_opens_with_the_two_commands_and_has_the_entries_users_need():
    text = (REPO / "README.md").read_text()
    first_block = text.split("```")[1].strip().splitlines()
    assert [line.split()[:2] for line in first_block] == [["make", "demo"], ["make", "test"]]
    assert "## Train on your own text files" in text
    assert "## Load the HF export in transformers, tokenizer included" in text
    assert "AutoTokenizer.from_pretrained" in text


def test_configs_md_lists_every_config_and_the_tiny_data_recipe():
    text = (DOCS / "configs.md").read_text()
    for config in sorted((REPO / "configs").glob("*.yaml")):
        assert f"`{config.name}`" in text, config.name
    assert "./language/datasets/tiny/train_msl128/" in text and "--max-seq-length 128" in text


def test_checkpoint_listings_show_tokenizer_json():
    for page in ("checkpoints.md", "train.md"):
        listing = [
            b for b in (DOCS / page).read_text().split("```") if "gptx.json" in b and "config.yaml" in b
        ]
        assert listing and all("tokenizer.json" in b for b in listing), page


def test_tokenizer_defaults_are_documented():
    assert "the tokenizer is `gpt2`" in (DOCS / "preprocess.md").read_text()
    assert "GPTX_TOKENIZER_DIR" in (DOCS / "getting-started.md").read_text()


def test_train_md_first_run_points_both_validation_loaders_at_the_data():
    text = (DOCS / "train.md").read_text()
    first_run = text[text.index("## A first run") : text.index("## What the config means")]
    assert "--set val_dataloader.data_dir=data/val" in first_run
    assert "--set validate.val_dataloader.data_dir=data/val" in first_run


def test_console_numbers_have_one_format():
    from gptx_cli.train.metrics import _fmt

    assert [_fmt(v) for v in (697.6493, 3824.0, 2.96764, 35431.76, 8e-4, 0.0)] == [
        "697.65", "3,824.0", "2.9676", "35,432", "8.0000e-04", "0.0000",
    ]  # fmt: skip
    shown = re.findall(r"tokens_per_s (\S+)", (DOCS / "train.md").read_text())
    assert shown and all(_fmt(float(v.replace(",", ""))) == v for v in shown)


def test_debug_is_accepted_after_the_subcommand(tmp_path):
    r = run_gptx("report", str(tmp_path / "nowhere"), "--debug")
    assert "Traceback" in r.stderr and "no metrics file" in r.stderr
    plain = run_gptx("report", str(tmp_path / "nowhere"))
    assert "Traceback" not in plain.stderr and plain.stderr.startswith("error:")


def test_help_does_not_cut_option_names_when_piped():
    r = run_gptx("train", "--help", env={"COLUMNS": ""})
    assert r.returncode == 0
    assert "--load-checkpoint-states,--load_checkpoint_states" in r.stdout
    assert "…" not in r.stdout


@pytest.mark.parametrize(
    ("config", "tokenizer"), [("tiny_neox.yaml", "neox-20b"), ("tiny_gptj.yaml", "gpt2")]
)
def test_the_missing_data_hint_carries_tokenizer_and_length(tmp_path, config, tokenizer):
    r = run_gptx("train", str(REPO / "configs" / config), "--model-dir", str(tmp_path / "m"))
    assert r.returncode == 1
    assert f"--tokenizer {tokenizer} --max-seq-length 128`" in r.stderr, r.stderr
