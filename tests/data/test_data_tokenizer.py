"""Tokenizers: file sets, presets, EOS/PAD as ModelZoo, and the tiktoken engine's exactness for GPT-2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from datagen import EDGE_TEXTS, stdlib_documents

from gptx_cli.data.tokenizer import load_tokenizer
from gptx_cli.errors import DataError, UsageError


@pytest.fixture(scope="module")
def real_text() -> list[str]:
    # ~300 kB of real text: Python sources, their docstrings and comments, whitespace runs included.
    return stdlib_documents(30, max_chars=10000)


def test_gpt2_special_ids_match_modelzoo(gpt2_tokenizer_dir: Path) -> None:
    tok = load_tokenizer(gpt2_tokenizer_dir)
    assert (tok.eos_id, tok.pad_id, tok.vocab_size) == (50256, 50256, 50257)
    assert tok.encode("Hello world") == [15496, 995]


def test_neox_special_ids_match_modelzoo(neox_tokenizer_json: Path) -> None:
    tok = load_tokenizer(neox_tokenizer_json)
    assert (tok.eos_id, tok.pad_id) == (0, 1)
    assert tok.backend == "tokenizers"  # tiktoken cannot reproduce NFC + added whitespace tokens
    assert tok.decode(tok.encode("Hello   world\n\n")) == "Hello   world\n\n"


def test_tiktoken_engine_reproduces_tokenizers_on_real_text_and_edge_cases(
    gpt2_tokenizer_dir: Path, real_text: list[str]
) -> None:
    fast = load_tokenizer(gpt2_tokenizer_dir, backend="tiktoken")
    ref = load_tokenizer(gpt2_tokenizer_dir, backend="tokenizers")
    assert fast.backend == "tiktoken" and ref.backend == "tokenizers"
    texts = real_text + EDGE_TEXTS + [" " * 40, "\n" * 7 + "x", "a" * 3000, "<|endoftext|><|endoftext|>", ""]
    assert fast.encode_batch(texts) == ref.encode_batch(texts)
    assert [a.tolist() for a in fast.encode_batch_arrays(texts)] == ref.encode_batch(texts)
    assert sum(len(t) for t in ref.encode_batch(real_text)) > 50_000  # a real amount of text was compared


def test_auto_backend_picks_tiktoken_only_for_gpt2(
    gpt2_tokenizer_dir: Path, neox_tokenizer_json: Path
) -> None:
    assert load_tokenizer(gpt2_tokenizer_dir).backend == "tiktoken"
    assert load_tokenizer(neox_tokenizer_json).backend == "tokenizers"


NFC_AND_WHITESPACE = [
    "e\u0301 + \u212b + A\u030a + \u1e9b\u0323: NFC composes some, leaves others",
    "  two   three    four" + " " * 24 + "twenty-four" + " " * 30 + "thirty\t\t  \n\n    x",
    "<|endoftext|>\u0301 a<|padding|>b <|endoftext|>",
]


def test_tiktoken_engine_reproduces_neox_with_nfc_and_added_whitespace_tokens(
    neox_tokenizer_json: Path, real_text: list[str]
) -> None:
    fast = load_tokenizer(neox_tokenizer_json, backend="tiktoken")
    ref = load_tokenizer(neox_tokenizer_json, backend="tokenizers")
    texts = real_text + EDGE_TEXTS + NFC_AND_WHITESPACE + [" " * n + "x" for n in range(1, 40)] + [""]
    expected = ref.encode_batch(texts)
    assert fast.encode_batch(texts) == expected
    assert [a.tolist() for a in fast.encode_batch_arrays(texts)] == expected
    assert any(50254 <= t <= 50276 for ids in expected for t in ids)  # added whitespace tokens were exercised


def test_tiktoken_refuses_a_tokenizer_it_cannot_reproduce(neox_tokenizer_json: Path, tmp_path: Path) -> None:
    raw = json.loads(neox_tokenizer_json.read_text(encoding="utf-8"))
    raw["normalizer"] = {"type": "NFKC"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(UsageError, match="cannot reproduce"):
        load_tokenizer(tmp_path / "tokenizer.json", backend="tiktoken")
    assert load_tokenizer(tmp_path / "tokenizer.json").backend == "tokenizers"


def test_huggingface_file_names_load_the_same_vocabulary(gpt2_tokenizer_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "vocab.json").symlink_to(gpt2_tokenizer_dir / "gpt2-encoder.json")
    (tmp_path / "merges.txt").symlink_to(gpt2_tokenizer_dir / "gpt2-vocab.bpe")
    text = EDGE_TEXTS[1]
    assert load_tokenizer(tmp_path).encode(text) == load_tokenizer(gpt2_tokenizer_dir).encode(text)


def test_tokenizer_json_of_gpt2_also_gets_the_fast_engine(gpt2_tokenizer_dir: Path, tmp_path: Path) -> None:
    ref = load_tokenizer(gpt2_tokenizer_dir, backend="tokenizers")
    ref.hf.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    assert tok.backend == "tiktoken"
    assert tok.encode(EDGE_TEXTS[0]) == ref.encode(EDGE_TEXTS[0])


def test_presets_resolve_from_env_var_or_flag(
    gpt2_tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = gpt2_tokenizer_dir.parent
    assert load_tokenizer("neox-20b", tokenizer_dir=shared).eos_id == 0
    monkeypatch.setenv("GPTX_TOKENIZER_DIR", str(shared))
    assert load_tokenizer("gpt2").eos_id == 50256


def test_missing_preset_offline_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPTX_TOKENIZER_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="'gpt2' not found locally .* offline") as err:
        load_tokenizer("gpt2")
    assert "GPTX_TOKENIZER_DIR" in str(err.value)


def test_directory_without_tokenizer_files_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no tokenizer.json"):
        load_tokenizer(tmp_path)
    assert not os.listdir(tmp_path)
