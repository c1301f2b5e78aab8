"""Three ModelZoo v2 rules gptx reproduces by default, each with its message and its switch
(docs/modelzoo-differences.md): find_token_range's end of a document / region (a ModelZoo bug: a
notice and `processing.gptx_keep_whole_last_character`), the reader's read_chunk_size cuts (ModelZoo's
rule: a count in the summary line and `processing.gptx_keep_whole_documents`) and
`dataset.truncate_to_msl` (utils.py: truncate_sequence). The goldens made by ModelZoo itself
(test_modelzoo_preprocess_goldens.py: endings, read_chunk_size, summarization) check the samples byte
for byte; these check the messages, the switches and the rules' edges on real runs of the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from gptx_testing import SHARED, run_gptx

from gptx_cli.data.hdf5 import read_samples
from gptx_cli.data.textclean import split_by_read_chunk_size
from gptx_cli.data.tokenizer import load_tokenizer

TOK = SHARED / "assets" / "tokenizers"
ENV = {"GPTX_TOKENIZER_DIR": str(TOK)}
# The last character of each is several GPT-2 tokens (CJK, an emoji with a skin tone), or one ('.').
ENDINGS = [
    "The capital of China is 北京",
    "Thanks a lot for the review, it was very helpful 👍🏽",
    "A document that ends in plain ASCII, as most do.",
    "Tokyo's main station is 東京駅",
]


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2", tokenizer_dir=str(TOK))


def _samples(out: Path) -> np.ndarray:
    return np.concatenate([read_samples(f) for f in sorted(out.glob("*.h5"))])


def _config(tmp_path: Path, processing: dict | None = None, dataset: dict | None = None, **setup) -> Path:
    body = {
        "setup": {"data": {"source": "./data", "type": "local"}, "output_dir": "./out", "mode": "pretraining"}
        | setup,
        "processing": {
            "custom_tokenizer": "gpt2tokenizer",
            "tokenizer_params": {
                "vocab_file": str(TOK / "gpt2" / "gpt2-vocab.bpe"),
                "encoder_file": str(TOK / "gpt2" / "gpt2-encoder.json"),
            },
            "max_seq_length": 64,
            "read_hook": "cerebras.modelzoo.data_preparation.data_preprocessing.hooks:text_read_hook",
            "read_hook_kwargs": {"text_key": "text"},
        }
        | (processing or {}),
        "dataset": {"pack_sequences": False} | (dataset or {}),
    }
    path = tmp_path / "prep.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return path


def _data(tmp_path: Path, records: list[dict]) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _modelzoo_end(tok, text: str) -> list[int]:
    """The ids ModelZoo keeps: of the tokens that hold bytes of the last character (offsets reaching the
    end of the text), only the first."""
    enc = tok.hf.encode(text, add_special_tokens=False)
    last = [i for i, (_, end) in enumerate(enc.offsets) if end >= len(text)]
    return enc.ids[: last[0] + 1]


def test_find_token_range_end_is_modelzoos_with_a_note_and_the_switch_keeps_every_token(tmp_path, gpt2):
    _data(tmp_path, [{"text": t} for t in ENDINGS])
    res = run_gptx("preprocess", "--config", str(_config(tmp_path)), cwd=tmp_path, env=ENV)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines()[-2] == (
        "note: 3 documents lost their last character's trailing tokens (a character the tokenizer splits "
        "into several tokens), as ModelZoo's data_preprocessing/utils.py: find_token_range does; "
        "processing.gptx_keep_whole_last_character: true (--keep-whole-last-character) keeps them"
    )
    eos = gpt2.eos_id
    for sample, text in zip(_samples(tmp_path / "out"), ENDINGS, strict=True):
        want = _modelzoo_end(gpt2, text) + [eos]
        assert sample[0, : len(want) - 1].tolist() == want[:-1] and sample[2, len(want) - 2] == eos
    assert len(_modelzoo_end(gpt2, ENDINGS[1])) == len(gpt2.encode(ENDINGS[1])) - 2  # 👍🏽: two tokens go
    assert len(_modelzoo_end(gpt2, ENDINGS[2])) == len(gpt2.encode(ENDINGS[2]))  # '.': nothing goes

    cfg = _config(tmp_path, {"gptx_keep_whole_last_character": True})
    res = run_gptx("preprocess", "--config", str(cfg), "--overwrite", cwd=tmp_path, env=ENV)
    assert res.returncode == 0 and "find_token_range" not in res.stderr, res.stderr
    for sample, text in zip(_samples(tmp_path / "out"), ENDINGS, strict=True):
        want = gpt2.encode(text) + [eos]
        assert sample[0, : len(want) - 1].tolist() == want[:-1]
    params = json.loads((tmp_path / "out" / "data_params.json").read_text())
    assert params["gptx"]["processing"]["keep_whole_last_character"] is True


def test_find_token_range_in_finetuning_leaves_the_turn_token_unmasked_and_says_so(tmp_path, gpt2):
    """Chat: the assistant region ends at its first 👍🏽 token, and ModelZoo's one "turn token" after it
    is then the emoji's second token, not <|im_end|>."""
    chats = [
        {"messages": [{"role": "user", "content": "Was the review useful?"},
                      {"role": "assistant", "content": "It was, thank you 👍🏽"}]},
        {"messages": [{"role": "user", "content": "And this one?"},
                      {"role": "assistant", "content": "Yes, it was useful too."}]},
    ]  # fmt: skip
    _data(tmp_path, chats)
    base = ["preprocess", "--mode", "finetuning", "--chat-key", "messages", "--input", "data"]
    base += ["--tokenizer", "gpt2", "--max-seq-length", "64"]
    res = run_gptx(*base, "--output-dir", "mz", cwd=tmp_path, env=ENV)
    assert res.returncode == 0, res.stderr
    assert res.stderr.splitlines()[-2] == (
        "note: 1 examples' loss masks leave out trailing tokens of a region's last character (a character "
        "the tokenizer splits into several tokens), as ModelZoo's data_preprocessing/utils.py: find_token_range "
        "does; processing.gptx_keep_whole_last_character: true (--keep-whole-last-character) keeps them"
    )
    res = run_gptx(*base, "--output-dir", "whole", "--keep-whole-last-character", cwd=tmp_path, env=ENV)
    assert res.returncode == 0 and "find_token_range" not in res.stderr, res.stderr
    mz, whole = _samples(tmp_path / "mz"), _samples(tmp_path / "whole")
    assert (mz[:, [0, 2]] == whole[:, [0, 2]]).all() and (mz[1] == whole[1]).all()
    # GPT-2 spells "<|im_end|>" out: ModelZoo's turn token is its first token, "<"
    labels, lt = whole[0, 2].tolist(), gpt2.encode("<")[0]
    at = max(i for i, t in enumerate(labels) if t == lt and whole[0, 1, i])
    assert labels[at - 3 : at] == gpt2.encode("🏽") and whole[0, 1, at - 3 : at + 1].tolist() == [1] * 4
    # ModelZoo: 🏽's first token ends the region, its second is the "turn token"; its third and "<" are not
    assert mz[0, 1, at - 3 : at + 1].tolist() == [1, 1, 0, 0]
    assert int(whole[0, 1].sum()) == int(mz[0, 1].sum()) + 2


def test_keep_whole_last_character_on_the_input_path_is_a_usage_error(tmp_path):
    _data(tmp_path, [{"text": t} for t in ENDINGS])
    res = run_gptx(
        "preprocess", "--input", "data", "--output-dir", "out", "--tokenizer", "gpt2",
        "--keep-whole-last-character", cwd=tmp_path, env=ENV,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "error: --keep-whole-last-character goes with --config (ModelZoo v2 pretraining) or --mode finetuning: "
        "the --input pretraining path (create_hdf5_dataset.py's rules) keeps every token already"
    )


def test_split_by_read_chunk_size_is_modelzoos_rule():
    # the last paragraph end within the chunk, else the last sentence end, else the chunk size
    assert split_by_read_chunk_size("a\n\nbb. cc\n\ndd", 9) == ["a\n\n", "bb. cc\n\n", "dd"]
    assert split_by_read_chunk_size("one. two! three? four", 12) == ["one. two!", " three? four"]
    assert split_by_read_chunk_size("abcdefghij", 4) == ["abcd", "efgh", "ij"]
    assert split_by_read_chunk_size("short.", 6) == ["short."]  # not larger: whole
    # bytes counted, characters cut: 6 two-byte characters are 12 bytes, and each cut of 2 characters
    # takes 2 from the count, so ModelZoo goes on cutting (empty pieces) until the count is 2
    assert split_by_read_chunk_size("éééééé", 2) == ["éé", "éé", "éé", "", ""]
    assert split_by_read_chunk_size("éééééé", 4) == ["éééé", "éé"]


def test_read_chunk_size_cuts_are_counted_and_the_switch_keeps_documents_whole(tmp_path):
    sentences = " ".join(f"Sentence number {i} of a long record." for i in range(60))  # ~2.3 KB
    records = [{"text": sentences}, {"text": "A short record of a few words, kept as it is."}]
    _data(tmp_path, records)
    cfg = _config(tmp_path, {"read_chunk_size": 1})
    res = run_gptx("preprocess", "--config", str(cfg), cwd=tmp_path, env=ENV)
    assert res.returncode == 0, res.stderr
    pieces = split_by_read_chunk_size(sentences, 1024)
    assert len(pieces) == 3 and all(p.endswith(".") for p in pieces[:-1])
    summary = next(line for line in res.stderr.splitlines() if line.startswith("data: "))
    assert " 4 documents (0 skipped; 1 records over read_chunk_size 1 KiB cut into 3 pieces), " in summary
    cfg = _config(tmp_path, {"read_chunk_size": 1, "gptx_keep_whole_documents": True})
    res = run_gptx("preprocess", "--config", str(cfg), "--overwrite", cwd=tmp_path, env=ENV)
    assert res.returncode == 0, res.stderr
    summary = next(line for line in res.stderr.splitlines() if line.startswith("data: "))
    assert " 2 documents (0 skipped), " in summary and "read_chunk_size" not in res.stderr, res.stderr


def test_read_chunk_size_default_is_modelzoos_1024_kib_for_a_config_and_off_on_the_input_path(tmp_path):
    big = " ".join(f"This is sentence {i} of a book-sized record." for i in range(26_000))  # ~1.15 MiB
    assert 1024 * 1024 < len(big.encode()) < 2 * 1024 * 1024
    _data(tmp_path, [{"text": big}])
    cfg = _config(tmp_path, {"max_seq_length": 2048})
    res = run_gptx("preprocess", "--config", str(cfg), cwd=tmp_path, env=ENV)
    assert res.returncode == 0, res.stderr
    assert "; 1 records over read_chunk_size 1,024 KiB cut into 2 pieces), " in res.stderr, res.stderr
    params = json.loads((tmp_path / "out" / "data_params.json").read_text())
    assert (
        params["gptx"]["processing"]["read_chunk_size"] == 1024
        and params["gptx"]["post-process"]["documents"] == 2
    )
    res = run_gptx(
        "preprocess", "--input", "data", "--output-dir", "cli", "--tokenizer", "gpt2", cwd=tmp_path, env=ENV
    )  # create_hdf5_dataset.py's reader: a record is one document however large
    assert res.returncode == 0 and "read_chunk_size" not in res.stderr, res.stderr
    params = json.loads((tmp_path / "cli" / "data_params.json").read_text())
    assert (
        params["gptx"]["post-process"]["documents"] == 1
        and "read_chunk_size" not in params["gptx"]["processing"]
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "processing.read_chunk_size: expected a positive whole number of KiB, got 0"),
        (1.5, "processing.read_chunk_size: expected a positive whole number of KiB, got 1.5"),
    ],
)
def test_bad_read_chunk_size_is_a_one_line_error(tmp_path, value, message):
    _data(tmp_path, [{"text": "x"}])
    cfg = _config(tmp_path, {"read_chunk_size": value})
    res = run_gptx("preprocess", "--config", str(cfg), cwd=tmp_path, env=ENV)
    line = next(i for i, t in enumerate(cfg.read_text().splitlines(), 1) if "read_chunk_size" in t)
    assert res.returncode != 0 and res.stderr.strip().splitlines()[-1].endswith(f":{line}:3: {message}"), (
        res.stderr
    )


def _finetune_config(tmp_path: Path, truncate: object, chat: bool = False) -> Path:
    hook = "chat_read_hook" if chat else "prompt_completion_text_read_hook"
    kwargs = (
        {"multi_turn_key": "messages", "multi_turn_role_key": "role", "multi_turn_content_key": "content"}
        if chat
        else {"prompt_key": "prompt", "completion_key": "completion"}
    )
    cfg = _config(
        tmp_path,
        {"read_hook": f"cerebras.modelzoo.data_preparation.data_preprocessing.hooks:{hook}",
         "read_hook_kwargs": kwargs, "read_chunk_size": 64},
        {"truncate_to_msl": truncate},
        mode="finetuning",
    )  # fmt: skip
    return cfg


def test_truncate_to_msl_keep_start_cuts_the_prompts_end(tmp_path, gpt2, documents):
    prompt, completion = " ".join(documents[:3]), "A short answer."
    _data(tmp_path, [{"prompt": prompt, "completion": completion}])
    cfg = _finetune_config(tmp_path, {"prompt_truncation_mode": "keep_start", "max_turn_length": 16})
    res = run_gptx("preprocess", "--config", str(cfg), cwd=tmp_path, env=ENV)
    assert res.returncode == 0, res.stderr
    line = next(i for i, t in enumerate(cfg.read_text().splitlines(), 1) if "read_chunk_size" in t)
    assert (
        f"{cfg}:{line}:3: warning: processing.read_chunk_size: accepted for ModelZoo compatibility; has no "
        "effect in gptx: in finetuning mode ModelZoo cuts no record (it cuts one-field records: pretraining text)"
    ) in res.stderr.splitlines()
    import ftfy

    p_ids = gpt2.encode(ftfy.fix_text(prompt))
    rest = gpt2.hf.encode("<|sep|>" + completion + "<|endoftext|>").ids
    keep = 64 - len(rest)
    assert keep >= 16 and len(p_ids) + len(rest) > 64
    want = p_ids[:keep] + rest  # keep_start: the prompt keeps its first tokens
    (sample,) = _samples(tmp_path / "out")
    assert sample[0, :63].tolist() == want[:-1] and sample[2, :63].tolist() == want[1:]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "dataset.truncate_to_msl: expected a mapping with max_turn_length and prompt_truncation_mode, "
               "got True (ModelZoo's finetuning_token_generator.py stops on it)"),
        ({"max_turn_length": -1}, "dataset.truncate_to_msl.max_turn_length: must be >= 0, got -1"),
    ],
)  # fmt: skip
def test_bad_truncate_to_msl_is_a_one_line_error(tmp_path, value, message):
    _data(tmp_path, [{"prompt": "a", "completion": "b"}])
    cfg = _finetune_config(tmp_path, value)
    res = run_gptx("preprocess", "--config", str(cfg), cwd=tmp_path, env=ENV)
    assert res.returncode != 0 and res.stderr.strip().splitlines()[-1].endswith(message), res.stderr


def test_truncating_a_chat_with_a_system_turn_fails_as_modelzoo_does(tmp_path, documents):
    chat = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": " ".join(documents[:3])},
                         {"role": "assistant", "content": "Yes."}]}  # fmt: skip
    _data(tmp_path, [chat])
    cfg = _finetune_config(tmp_path, {"prompt_truncation_mode": "keep_end", "max_turn_length": 8}, chat=True)
    res = run_gptx("preprocess", "--config", str(cfg), cwd=tmp_path, env=ENV)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1] == (
        "error: data/a.jsonl:1: dataset.truncate_to_msl cannot cut this example: ModelZoo's utils.py: "
        "truncate_sequence asserts 'Mismatch in number of regions' when an example has regions besides "
        "user/assistant (here: system)"
    ), res.stderr
