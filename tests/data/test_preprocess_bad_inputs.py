"""Bad input to `gptx preprocess`, one test per input, each asserting what the user is told (#25 item 8).

Real subprocess runs of the CLI on tiny files; ModelZoo's behaviour each row follows is named in its test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gptx_testing import SHARED, run_gptx

TOK_DIR = str(SHARED / "assets" / "tokenizers")
ENV = {"GPTX_TOKENIZER_DIR": TOK_DIR, "HF_HUB_OFFLINE": "1"}
CHAT = ("--mode", "finetuning", "--chat-key", "messages")


def _jsonl(path: Path, recs: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _turn(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


GOOD = {"messages": [_turn("user", "What is two plus two?"), _turn("assistant", "It is four, of course.")]}


def _preprocess(*args: str):
    return run_gptx("preprocess", "--tokenizer", "gpt2", "--max-seq-length", "128", *args, env=ENV)


def _params(out: Path) -> dict:
    """ModelZoo's post-process counts and gptx's own (gptx.post-process) together."""
    params = json.loads((out / "data_params.json").read_text())
    return params["post-process"] | params["gptx"]["post-process"]


# ------------------------------------------------------------------------------------------ chat roles


def test_capitalised_roles_warn_by_name_and_zero_loss_is_an_error(tmp_path) -> None:
    """ModelZoo's chat_read_hook passes any role through and trains only 'assistant' turns: gptx keeps
    the records, names each unknown role with its count, and refuses the output that trains nothing."""
    recs = [{"messages": [_turn("User", "What is two plus two?"), _turn("Assistant", "It is four.")]}] * 3
    path = _jsonl(tmp_path / "caps.jsonl", recs)
    r = _preprocess(*CHAT, "-i", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 1, r.stderr
    assert f"warning: 3 chat records with role 'User' (first at {path}:1)" in r.stderr
    assert f"warning: 3 chat records with role 'Assistant' (first at {path}:1)" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "loss_valid_tokens is 0" in last and "case-sensitive" in last
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "data_params.json").exists()


def test_misspelt_role_beside_good_records_is_a_warning_with_count(tmp_path) -> None:
    recs = [
        GOOD,
        {"messages": [_turn("user", "Who are you, then?"), _turn("asistant", "A helpful helper.")]},
        {"messages": [_turn("wizard", "Cast a spell now."), _turn("assistant", "Abracadabra, done.")]},
        {"messages": [_turn("user", "And who are you?"), _turn("asistant", "Still a helper.")]},
    ]
    path = _jsonl(tmp_path / "typo.jsonl", recs)
    r = _preprocess(*CHAT, "-i", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert f"warning: 2 chat records with role 'asistant' (first at {path}:2)" in r.stderr
    assert f"warning: 1 chat record with role 'wizard' (first at {path}:3)" in r.stderr
    assert _params(tmp_path / "out")["n_examples"] == 4  # kept, as ModelZoo keeps them


# ------------------------------------------------------------------------------ skipped conversations


def test_each_skipped_conversation_says_why_and_where(tmp_path) -> None:
    recs = [
        GOOD,
        {"messages": [_turn("assistant", "An answer first."), _turn("user", "Then a question?")]},
        {"messages": [_turn("user", "Question one?"), _turn("user", "Question two?")]},
        {"messages": [_turn("user", "Only a question, nobody answers?")]},
        {"messages": [GOOD["messages"][0], GOOD["messages"][1], _turn("system", "Be nice."), _turn("user", "q?")]},
        {"messages": []},
    ]  # fmt: skip
    path = _jsonl(tmp_path / "chat.jsonl", recs)
    r = _preprocess(*CHAT, "-i", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    err = r.stderr
    # Kept by ModelZoo's chat_read_hook (it checks only pairs of different roles), named as a likely mistake.
    assert f"warning: 1 chat record with an assistant turn before the user's (first at {path}:2)" in err
    assert f"warning: skipped {path}:3: turns 0 and 1 of 'messages' are both 'user'" in err
    assert f"warning: skipped {path}:4: 'messages' has 1 turn, not user/assistant pairs" in err
    assert f"warning: skipped {path}:5: 'messages' has 4 turns" not in err  # even: kept, noted below
    assert f"warning: 1 chat record with a system turn after the first turn (first at {path}:5)" in err
    assert f"warning: skipped {path}:6: 'messages' has no turns" in err
    assert "ModelZoo's chat_read_hook: 'Every user should have a corresponding assistant, skipping...'" in err
    params = _params(tmp_path / "out")
    assert params["documents_skipped"] == 3 and params["n_examples"] == 3


def test_skipped_records_are_named_up_to_five_then_counted(tmp_path) -> None:
    recs = [GOOD] + [{"messages": [_turn("user", f"Question {i}?")]} for i in range(8)]
    path = _jsonl(tmp_path / "odd.jsonl", recs)
    r = _preprocess(*CHAT, "-i", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    named = [line for line in r.stderr.splitlines() if line.startswith("warning: skipped ")]
    assert [line.split(":")[2] for line in named] == ["2", "3", "4", "5", "6"]
    assert "warning: 3 more bad records skipped" in r.stderr


def test_all_records_skipped_is_an_error_that_says_so(tmp_path) -> None:
    path = _jsonl(tmp_path / "empty.jsonl", [{"messages": []}, {"messages": [_turn("user", "q?")]}])
    r = _preprocess(*CHAT, "-i", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[:2] == [
        f"warning: skipped {path}:1: 'messages' has no turns (ModelZoo's chat_read_hook returns nothing for it)",
        f"warning: skipped {path}:2: 'messages' has 1 turn, not user/assistant pairs (ModelZoo's chat_read_hook: "
        "'Every user should have a corresponding assistant, skipping...')",
    ]
    assert lines[2:] == [
        f"error: no documents in {path}: all 2 records were skipped (the warnings above say why)"
    ]


def test_strict_fails_on_the_first_skipped_conversation(tmp_path) -> None:
    path = _jsonl(tmp_path / "chat.jsonl", [GOOD, {"messages": [_turn("user", "q?")]}])
    r = _preprocess(*CHAT, "--strict", "-i", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:2: 'messages' has 1 turn"), r.stderr


# ---------------------------------------------------------------------------------- --processes, msl


def test_processes_are_capped_at_the_cores_with_a_note(tmp_path) -> None:
    path = _jsonl(tmp_path / "chat.jsonl", [GOOD] * 3)
    r = _preprocess(*CHAT, "--processes", "100000", "-i", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    cores = len(os.sched_getaffinity(0))
    assert (
        f"note: --processes 100000 is more than the {cores} cores here; using {cores} worker processes"
        in r.stderr
    )
    assert _params(tmp_path / "out")["n_examples"] == 3


def test_max_seq_length_whose_samples_cannot_fit_in_memory_is_refused_before_work(tmp_path) -> None:
    path = _jsonl(tmp_path / "chat.jsonl", [GOOD] * 3)
    msl = 10**11  # 1.1 TiB per [3, msl] int32 sample: more than any host here
    r = _preprocess(*CHAT, "-i", str(path), "-o", str(tmp_path / "out"), "--max-seq-length", str(msl))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: --max-seq-length {msl:,}: each sample is [3, {msl:,}] int32"
    ), r.stderr
    assert "of memory available" in lines[0] and "fine-tuning pads every example to it" in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------------------ --train-tokenizer


def _text_corpus(path: Path) -> Path:
    return _jsonl(
        path, [{"text": f"the quick brown fox jumps over the lazy dog, {i} times."} for i in range(40)]
    )


def test_tokenizer_beside_train_tokenizer_is_refused(tmp_path) -> None:
    path = _text_corpus(tmp_path / "in.jsonl")
    r = run_gptx("preprocess", "--tokenizer", "gpt2", "--train-tokenizer", "400", "-i", str(path),
                 "-o", str(tmp_path / "out"), env=ENV)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "error: --tokenizer and --train-tokenizer exclude each other: --train-tokenizer trains the tokenizer "
        "it uses (output_dir/tokenizer.json)"
    )
    assert not (tmp_path / "out").exists()


def test_trained_vocabulary_smaller_than_asked_is_reported(tmp_path) -> None:
    path = _text_corpus(tmp_path / "in.jsonl")
    r = run_gptx("preprocess", "--train-tokenizer", "8000", "--max-seq-length", "16", "-i", str(path),
                 "-o", str(tmp_path / "out"), env=ENV)  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = len(json.loads((tmp_path / "out" / "tokenizer.json").read_text())["model"]["vocab"])
    assert 258 < got < 8000
    assert (
        f"warning: --train-tokenizer 8,000: the input gave only {got:,} vocabulary entries (256 bytes, 2 special "
        f"tokens and {got - 258:,} merges" in r.stderr
    )


# -------------------------------------------------------------------------------------- --data-splits

QA = ("--mode", "finetuning", "--prompt-key", "prompt", "--completion-key", "completion")


def _qa(path: Path) -> Path:
    return _jsonl(
        path, [{"prompt": f"What is {i} plus two?", "completion": f"It is {i + 2}."} for i in range(30)]
    )


def test_each_output_gets_its_own_default_data_splits_dir(tmp_path) -> None:
    path = _qa(tmp_path / "qa.jsonl")
    runs = tmp_path / "runs"
    for name, splits in (("a", "train=0.8,val=0.2"), ("b", "train=0.5,val=0.5")):
        r = _preprocess(*QA, "-i", str(path), "-o", str(runs / name), "--data-splits", splits)
        assert r.returncode == 0, r.stderr  # the second run does not trip over the first's splits
    first = sorted(p.relative_to(runs) for p in (runs / "a" / "data_splits_dir").rglob("*.jsonl.zst"))
    assert first and not (runs / "data_splits_dir").exists()
    r = _preprocess(
        *QA, "-i", str(path), "-o", str(runs / "b"), "--data-splits", "train=0.6,val=0.4", "--overwrite"
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(runs) for p in (runs / "a" / "data_splits_dir").rglob("*.jsonl.zst")) == first
    assert (runs / "a" / "train" / "data_params.json").is_file()


def test_split_fractions_outside_zero_one_are_refused(tmp_path) -> None:
    path = _qa(tmp_path / "qa.jsonl")
    r = _preprocess(*QA, "-i", str(path), "-o", str(tmp_path / "out"), "--data-splits", "train=1.5,val=-0.5")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --data-splits: the split_fraction of 'train' 1.5 is outside [0, 1]"
    assert not (tmp_path / "data_splits_dir").exists() and not (tmp_path / "out" / "data_splits_dir").exists()


def test_split_fraction_outside_zero_one_in_a_yaml_names_file_and_line(tmp_path) -> None:
    path = _qa(tmp_path / "qa.jsonl")
    cfg = tmp_path / "split.yaml"
    cfg.write_text(
        "setup:\n"
        f"  data: {{source: {tmp_path}, type: local}}\n"
        f"  output_dir: {tmp_path / 'out'}\n"
        "  mode: finetuning\n"
        "  data_splits:\n"
        "    train: {split_fraction: 1.25}\n"
        "    val: {split_fraction: -0.25}\n"
        "processing:\n"
        "  huggingface_tokenizer: gpt2\n"
        "  max_seq_length: 64\n"
        "  read_hook: cerebras.modelzoo.data_preparation.data_preprocessing.hooks:prompt_completion_text_read_hook\n"
        "  read_hook_kwargs: {prompt_key: prompt, completion_key: completion}\n"
    )
    r = run_gptx("preprocess", "--config", str(cfg), env=ENV)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert (
        last.startswith(f"error: {cfg}:") and "the split_fraction of 'train' 1.25 is outside [0, 1]" in last
    ), r.stderr
    assert path.exists()


def test_wrong_prompt_key_in_a_split_yaml_names_the_users_record(tmp_path) -> None:
    """ModelZoo's data_split writes the records to data_splits_dir before preprocessing them: the error
    names the user's file and line, not the split file."""
    src = tmp_path / "src"
    src.mkdir()
    path = _jsonl(
        src / "qa.jsonl", [{"question": f"What is {i} plus two?", "completion": "Four."} for i in range(6)]
    )
    cfg = tmp_path / "split.yaml"
    cfg.write_text(
        "setup:\n"
        f"  data: {{source: {src}, type: local}}\n"
        f"  output_dir: {tmp_path / 'out'}\n"
        "  mode: finetuning\n"
        "  data_splits:\n"
        "    train: {split_fraction: 0.5}\n"
        "    val: {split_fraction: 0.5}\n"
        "processing:\n"
        "  huggingface_tokenizer: gpt2\n"
        "  max_seq_length: 64\n"
        "  read_hook: cerebras.modelzoo.data_preparation.data_preprocessing.hooks:prompt_completion_text_read_hook\n"
        "  read_hook_kwargs: {prompt_key: prompt, completion_key: completion}\n"
    )
    r = run_gptx("preprocess", "--config", str(cfg), env=ENV)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"error: {path}:1: no key 'prompt' in the record (has: question, completion)", r.stderr
    assert "data_splits_dir" not in r.stderr
