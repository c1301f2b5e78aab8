"""`gptx preprocess --mode finetuning` on real text (the standard library's docstrings as completions):
token ids are the tokenizer's own encoding, the loss mask is 1 on completion / assistant tokens and EOS
only, and the ModelZoo finetuning YAML runs as written (paths and tokenizer edited)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gptx_testing import SHARED, run_gptx

from gptx_cli.data.builtin_corpus import iter_stdlib_qa
from gptx_cli.data.hdf5 import read_samples
from gptx_cli.data.tokenizer import load_tokenizer
from gptx_cli.data.vsl import pack_bins

TOK_DIR = str(SHARED / "assets" / "tokenizers")
ENV = {"GPTX_TOKENIZER_DIR": TOK_DIR}
MSL = 128
SYSTEM = "You answer questions about the Python standard library."


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gpt2", tokenizer_dir=TOK_DIR)


@pytest.fixture(scope="module")
def records() -> list[dict[str, str]]:
    return list(iter_stdlib_qa(limit=80))


def _jsonl(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _samples(out: Path) -> np.ndarray:
    return np.concatenate([read_samples(f) for f in sorted(out.glob("data-*.h5"))])


def _preprocess(*args: str):
    r = run_gptx("preprocess", "--tokenizer", "gpt2", "--max-seq-length", str(MSL), *args, env=ENV)
    return r


def _unshift(sample: np.ndarray) -> tuple[list[int], list[int]]:
    """(all ids of the example, loss weight of each id) from a padded [3, msl] sample."""
    # Real positions end at the last non-pad input or the last loss position (the EOS label; for GPT-2
    # the pad id is the EOS id).
    n = int(max((sample[0] != 50256).nonzero()[0].max(), (sample[1] > 0).nonzero()[0].max())) + 1
    ids = [int(sample[0, 0]), *map(int, sample[2, :n])]
    assert list(sample[0, 1:n]) == ids[1:n]  # labels are input_ids shifted by one
    return ids, [0, *map(int, sample[1, :n])]


def test_prompt_completion_mask_on_real_text(tmp_path, tok, records) -> None:
    r = _preprocess("--mode", "finetuning", "--prompt-key", "prompt", "--completion-key", "completion",
                    "-i", str(_jsonl(tmp_path / "qa.jsonl", records)), "-o", str(tmp_path / "out"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    samples = _samples(tmp_path / "out")
    data_params = json.loads((tmp_path / "out" / "data_params.json").read_text())
    params = data_params["post-process"]
    kept = [x for x in records if len(tok.encode(x["prompt"] + "<|sep|>" + x["completion"])) + 1 <= MSL]
    assert len(samples) == len(kept) == params["n_examples"] and len(kept) > 50
    assert data_params["gptx"]["post-process"]["examples_too_long"] == len(records) - len(kept)
    assert params["total_raw_docs"] == len(records) and params["raw_docs_skipped"] == 0
    assert params["discarded_files"] == len(records) - len(kept)
    eos = tok.eos_id
    for sample, rec in zip(samples, kept, strict=True):
        ids, mask = _unshift(sample)
        prompt_ids = tok.encode(rec["prompt"] + "<|sep|>")
        # The ids are the tokenizer's own encoding of prompt + sep + completion, then EOS.
        assert ids == tok.encode(rec["prompt"] + "<|sep|>" + rec["completion"]) + [eos]
        assert ids == tok.hf.encode(rec["prompt"] + "<|sep|>" + rec["completion"] + "<|endoftext|>").ids
        # Mask 0 on every prompt (and separator) token, 1 on every completion token and on EOS.
        assert mask == [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
        assert (
            tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
            == rec["completion"] + "<|endoftext|>"
        )
        assert not sample[1, len(ids) - 1 :].any() and (sample[0, len(ids) - 1 :] == tok.pad_id).all()
    assert params["loss_valid_tokens"] == int(samples[:, 1].sum())


def test_chat_only_assistant_turns_are_trained(tmp_path, tok, records) -> None:
    pairs = [records[i : i + 2] for i in range(0, 40, 2)]
    chats = [
        {"messages": [{"role": "system", "content": SYSTEM}]
         + [m for q in pair for m in ({"role": "user", "content": q["prompt"]},
                                      {"role": "assistant", "content": q["completion"]})]}
        for pair in pairs
    ]  # fmt: skip
    r = _preprocess("--mode", "finetuning", "--chat-key", "messages", "--max-seq-length", "512",
                    "-i", str(_jsonl(tmp_path / "chat.jsonl", chats)), "-o", str(tmp_path / "out"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    samples = _samples(tmp_path / "out")
    assert len(samples) == len(chats)
    for sample, chat in zip(samples, chats, strict=True):
        turns = chat["messages"]
        text = "".join(
            f"<|im_start|>{t['role']}\n{t['content'].strip() if t['role'] != 'system' else t['content']}<|im_end|>\n"
            for t in turns
        )
        ids, mask = _unshift(sample)
        assert ids == tok.hf.encode(text, add_special_tokens=False).ids  # ModelZoo's ChatML, no EOS text
        trained = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
        untrained = tok.decode([t for t, m in zip(ids, mask, strict=True) if not m])
        for t in turns:
            content = t["content"].strip()
            if t["role"] == "assistant":
                assert content in trained and content not in untrained
            else:  # user and system tokens: mask 0
                assert content in untrained and content not in trained
        # One trained run per assistant turn: its content, and (ModelZoo's turn-token rule) the one
        # token after it, the start of <|im_end|>.
        runs, cur = [], []
        for t, m in zip(ids, mask, strict=True):
            if m:
                cur.append(t)
            elif cur:
                runs, cur = [*runs, cur], []
        answers = [t["content"].strip() for t in turns if t["role"] == "assistant"]
        assert len(runs) == len(answers)
        for run, answer in zip(runs, answers, strict=True):
            assert tok.decode(run).startswith(answer) and (answer + "<|im_end|>").startswith(tok.decode(run))


@pytest.mark.parametrize(
    "record,args,message",
    [
        ({"question": "q", "completion": "a long enough answer"}, ("--prompt-key", "prompt", "--completion-key", "completion"), ":2: no key 'prompt' in the record"),
        ({"prompt": "a question here", "completion": ""}, ("--prompt-key", "prompt", "--completion-key", "completion"), ":2: completion 'completion' is empty"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]}, ("--chat-key", "messages"), ":2: turn 1 of 'messages': content 'content' is int, not a string"),
    ],
)  # fmt: skip
def test_bad_records_are_one_line_errors_naming_file_and_line(tmp_path, record, args, message) -> None:
    good = (
        {
            "messages": [
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "It is 4."},
            ]
        }
        if "--chat-key" in args
        else {"prompt": "What is two plus two?", "completion": " It is four, of course."}
    )
    path = _jsonl(tmp_path / "in.jsonl", [good, record])
    r = _preprocess("--mode", "finetuning", *args, "-i", str(path), "-o", str(tmp_path / "out"))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}{message}"), r.stderr
    assert not list((tmp_path / "out").glob("data-*.h5"))


def test_parquet_processes_packing_and_splits(tmp_path, records) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = _jsonl(tmp_path / "qa.jsonl", records)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "qa.parquet")
    base = ("--mode", "finetuning", "--prompt-key", "prompt", "--completion-key", "completion")
    runs = {
        "one": ("-i", str(jsonl)),
        "two": ("-i", str(jsonl), "--processes", "2"),
        "parquet": ("-i", str(tmp_path / "qa.parquet")),
    }
    for name, extra in runs.items():
        r = _preprocess(*base, *extra, "-o", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
    one = _samples(tmp_path / "one")
    for name in ("two", "parquet"):
        assert np.array_equal(_samples(tmp_path / name), one), name
    # Packing (VSL): ModelZoo's bins, each the examples' tokens concatenated; the same loss tokens, and
    # with two processes the same bytes.
    for name, extra in (("packed", ()), ("packed2", ("--processes", "2"))):
        r = _preprocess(*base, "-i", str(jsonl), "-o", str(tmp_path / name), "--use-vsl", *extra)
        assert r.returncode == 0, r.stderr
    packed = _samples(tmp_path / "packed")
    assert packed.shape[1] == 5 and len(packed) < len(one) and packed[:, 1].sum() == one[:, 1].sum()
    assert np.array_equal(_samples(tmp_path / "packed2"), packed)
    # data_splits: every example lands in exactly one split, the same for the same seed.
    r = _preprocess(
        *base, "-i", str(jsonl), "-o", str(tmp_path / "split"), "--data-splits", "train=0.75,val=0.25"
    )
    assert r.returncode == 0, r.stderr
    train, val = _samples(tmp_path / "split" / "train"), _samples(tmp_path / "split" / "val")
    assert len(train) + len(val) == len(one) and len(val) > 5
    rows = {s.tobytes() for s in one}
    assert {s.tobytes() for s in train} | {s.tobytes() for s in val} == rows


def test_pack_bins_is_modelzoos_append_within_max_length() -> None:
    # From the last example backwards, each joins the nearest earlier bin it fits in.
    assert pack_bins([5, 3, 4, 2], 8) == [[0, 1], [2, 3]]
    assert pack_bins([6, 6, 6], 8) == [[0], [1], [2]]
    assert pack_bins([2, 2, 2, 2], 8) == [[0, 1, 2, 3]]  # 3 joins 2, [2, 3] joins 1, then 0


def test_modelzoo_finetuning_yaml_runs_through_preprocess_config(tmp_path, records) -> None:
    """ModelZoo's own finetuning_data_split.yaml, with only paths and tokenizer (and prompt/completion
    keys, which it leaves as placeholders) edited."""
    import re

    from gptx_testing import REPO

    jsonl = _jsonl(tmp_path / "qa.jsonl", records)
    text = (REPO / "tests" / "data" / "modelzoo_finetuning_data_split.yaml").read_text()
    text = text.replace("/path/to/text_data", str(jsonl)).replace(
        "/path/to/output_dir", str(tmp_path / "out")
    )
    text = text.replace("/path/to/raw_data_splits_dir", str(tmp_path / "splits"))
    text = text.replace('"tiiuae/falcon-7b"', '"gpt2"')
    text = text.replace("<prompt_key>", "prompt").replace("<completion_key>", "completion")
    assert not re.search(r"/path/to|<\w+_key>", text)
    (tmp_path / "ft.yaml").write_text(text)
    r = run_gptx("preprocess", "--config", str(tmp_path / "ft.yaml"), env=ENV)
    assert r.returncode == 0, r.stderr
    assert "warning: processing.read_chunk_size" in r.stderr  # ModelZoo keys without effect are named
    # ModelZoo's data_split: the records are split into data_splits_dir first, then preprocessed
    assert list((tmp_path / "splits" / "train").rglob("*.jsonl.zst"))
    train = json.loads((tmp_path / "out" / "train" / "data_params.json").read_text())
    val = json.loads((tmp_path / "out" / "val" / "data_params.json").read_text())
    assert (
        train["gptx"]["processing"]["mode"] == "finetuning" and train["processing"]["max_seq_length"] == 2048
    )
    assert train["gptx"]["processing"]["finetuning"]["hook"] == "prompt_completion_text_read_hook"
    n = train["post-process"]["n_examples"] + val["post-process"]["n_examples"]
    assert n == len(records) and val["post-process"]["n_examples"] > 5  # 0.8 / 0.2, nothing over 2048
    sample = _samples(tmp_path / "out" / "train")[0]
    assert sample.shape == (3, 2048) and 0 < sample[1].sum() < (sample[0] != 50256).sum()


def test_resume_keeps_a_finished_run_and_refuses_other_keys(tmp_path, records) -> None:
    jsonl = _jsonl(tmp_path / "qa.jsonl", records)
    args = (
        "--mode",
        "finetuning",
        "--prompt-key",
        "prompt",
        "--completion-key",
        "completion",
        "-i",
        str(jsonl),
    )
    out = tmp_path / "out"
    r = _preprocess(*args, "-o", str(out))
    assert r.returncode == 0, r.stderr
    first = {f.name: f.read_bytes() for f in out.glob("data-*.h5")}
    r = _preprocess(*args, "-o", str(out), "--resume")
    assert r.returncode == 0, r.stderr
    assert {f.name: f.read_bytes() for f in out.glob("data-*.h5")} == first
    swapped = (
        "--mode",
        "finetuning",
        "--prompt-key",
        "completion",
        "--completion-key",
        "prompt",
        "-i",
        str(jsonl),
    )
    r = _preprocess(*swapped, "-o", str(out), "--resume")
    assert r.returncode == 1 and "--resume needs the same" in r.stderr
    r = _preprocess(*args, "-o", str(tmp_path / "packed"), "--pack-sequences")
    assert r.returncode == 2 and "--use-vsl" in r.stderr  # packing is --use-vsl (ModelZoo: use_vsl)
