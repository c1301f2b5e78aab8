"""`gptx inspect DATA_DIR`: a preprocessed sample shown decoded, with the tokens outside the loss marked,
document boundaries at each EOS (VSL: where position_ids restart, with each document's attention span),
on data the real `gptx preprocess` wrote; bad input gets one line naming it."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from datagen import make_pile
from gptx_testing import run_gptx, shared_path

from gptx_cli.data.hdf5 import mark_complete, read_samples
from gptx_cli.data.tokenizer import load_tokenizer

MSL = 32
DOCS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Hello world, this is the second document.",
    "A third one follows with a café, and some more words to read here.",
]
QA = [
    {"prompt": "Q: what is two plus two?\nA:", "completion": " four"},
    {"prompt": "Q: the capital of France?\nA:", "completion": " Paris, of course."},
]


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return {"GPTX_TOKENIZER_DIR": str(shared_path("assets", "tokenizers")), "HF_HUB_OFFLINE": "1"}


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _preprocess(tmp: Path, env: dict[str, str], out: str, records: list[dict], *args: str) -> Path:
    src = _jsonl(tmp / f"{out}.jsonl", records)
    res = run_gptx(
        "preprocess", "--input", str(src), "--output-dir", str(tmp / out), "--tokenizer", "gpt2", *args,
        env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return tmp / out


@pytest.fixture(scope="module")
def data(tmp_path_factory, env) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("inspect")
    return {
        "pretraining": _preprocess(tmp, env, "pt", [{"text": t} for t in DOCS], "--max-seq-length", str(MSL)),
        "finetuning": _preprocess(
            tmp,
            env,
            "ft",
            QA,
            "--mode",
            "finetuning",
            "--prompt-key",
            "prompt",
            "--completion-key",
            "completion",
            "--max-seq-length",
            str(MSL),
        ),  # fmt: skip
        "vsl": _preprocess(
            tmp, env, "vsl", [{"text": t} for t in DOCS], "--use-vsl", "--max-seq-length", "64"
        ),
    }


def _inspect(*args: str, env: dict[str, str]):
    return run_gptx("inspect", *args, env=env)


def _json(*args: str, env: dict[str, str]) -> list[dict]:
    res = _inspect(*args, "--format", "json", env=env)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_pretraining_sample_shows_its_documents_split_at_eos(data, env) -> None:
    res = _inspect(str(data["pretraining"]), env=env)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"{data['pretraining']}: ") and "(pretraining; tokenizer " in lines[0]
    assert "== sample 0: " in res.stdout and "(msl 32): 33 tokens, 32 in the loss ==" in res.stdout
    # The first token is no label (not in the loss); the first document ends in EOS, then the next starts.
    first = lines.index("--- document 1: tokens 0-14 ---")
    assert lines[first + 1] == "[[The]]" + DOCS[0].removeprefix("The") + "<|endoftext|>"
    assert lines[first + 2].startswith("--- document 2: tokens 15-")
    assert DOCS[1].startswith(lines[first + 3]) or lines[first + 3].startswith(DOCS[1])


def test_json_documents_are_the_sample_tokens_decoded(data, env) -> None:
    tok = load_tokenizer("gpt2", tokenizer_dir=env["GPTX_TOKENIZER_DIR"])
    samples = read_samples(next(data["pretraining"].glob("*.h5")))
    views = _json(str(data["pretraining"]), "--limit", str(len(samples)), env=env)
    assert [v["sample"] for v in views] == list(range(len(samples)))
    for view, sample in zip(views, samples, strict=True):
        real = MSL - view["padding"]
        assert view["tokens"] == real + 1 and view["loss_tokens"] == int(sample[1].sum())
        shown = "".join(d["text"] for d in view["documents"])
        assert shown == tok.decode([int(sample[0][0]), *map(int, sample[2][:real])])
        assert all(d["text"].endswith("<|endoftext|>") for d in view["documents"][:-1])
        assert view["documents"][-1]["tokens"][1] == real
    assert views[-1]["padding"] > 0  # the short tail sample: its padding counted, not shown


def test_finetuning_prompt_is_marked_outside_the_loss(data, env) -> None:
    res = _inspect(str(data["finetuning"]), "--limit", "2", env=env)
    assert res.returncode == 0, res.stderr
    assert "(finetuning; " in res.stdout.splitlines()[0]
    for record in QA:
        # prompt (and ModelZoo's separator) outside the loss; the completion and its EOS in it
        assert f"[[{record['prompt']}<|sep|>]]{record['completion']}<|endoftext|>" in res.stdout
    assert "2 in the loss" in res.stdout and "padding ==" in res.stdout  # " four" + EOS
    (view,) = _json(str(data["finetuning"]), "--sample", "1", env=env)
    segments = view["documents"][0]["segments"]
    assert [s["loss"] for s in segments] == [False, True]
    assert segments[1]["text"] == QA[1]["completion"] + "<|endoftext|>"


def test_vsl_sample_shows_each_documents_positions_and_attention_span(data, env) -> None:
    (view,) = _json(str(data["vsl"]), env=env)
    docs = view["documents"]
    assert view["vsl"] is True
    # ModelZoo's VSL packing order: each read chunk's documents longest first
    assert [d["text"] for d in docs] == [DOCS[i] + "<|endoftext|>" for i in (2, 0, 1)]
    for i, d in enumerate(docs):
        start, end = d["tokens"]
        last = end - 1 if i == len(docs) - 1 else end  # the last document lost its final input token
        assert d["position_ids"] == [0, last - start]
        assert d["attention_span"] == [start, last]
        # the sample's first token is no label; ModelZoo keeps the loss on each document's EOS, whose
        # label is the next document's first token
        assert d["segments"][0]["loss"] is (i > 0)
    res = _inspect(str(data["vsl"]), env=env)
    assert res.returncode == 0, res.stderr
    s, e = docs[1]["tokens"]
    assert (
        f"--- document 2: tokens {s}-{e}, position_ids 0-{e - s}, attends within input positions {s}-{e} ---"
        in (res.stdout)
    )


def test_a_terminal_gets_the_mask_dimmed_not_bracketed(data, env) -> None:
    leader, follower = pty.openpty()
    proc = subprocess.run(
        [sys.executable, "-m", "gptx_cli.cli", "inspect", str(data["finetuning"])],
        stdout=follower, stderr=subprocess.PIPE, env={**os.environ, **env, "TERM": "xterm", "COLUMNS": "200"},
        timeout=120,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    out = b"".join(chunks).decode()
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[2m" in out and "[[" not in out  # dim (SGR 2), no plain-text brackets
    assert "four" in out


def test_a_part_directory_of_the_pile_layout_finds_its_tokenizer(tmp_path, documents, env) -> None:
    make_pile(tmp_path / "pile", [documents[:20], documents[20:]], documents[5:25])
    res = run_gptx(
        "preprocess", "--dataset", "pile", "--input-dir", "pile", "--max-seq-length", str(MSL),
        "--splits", "train", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    split = tmp_path / "language/datasets/pile_original/hdf5_dataset" / f"train_shuffled_msl{MSL}"
    res = _inspect(str(split / "3"), env=env)
    assert res.returncode == 0, res.stderr
    assert f"; {split / 'data_params.json'})" in res.stdout.splitlines()[0]  # the parent's
    whole = _json(str(split), "--limit", "1000", env=env)
    parts = [read_samples(f) for p in range(10) for f in sorted((split / str(p)).glob("*.h5"))]
    assert len(whole) == sum(len(s) for s in parts)  # the split: every part, in order


def test_bad_input_is_one_line_naming_it(tmp_path, data, env) -> None:
    cases = [
        ([str(tmp_path / "nope")], 1, f"error: data dir {tmp_path / 'nope'} does not exist"),
        ([str(tmp_path)], 1, f"error: {tmp_path} holds no HDF5 sample files: not a `gptx preprocess` output"),
        ([str(data["pretraining"]), "--sample", "99"], 2, "error: --sample 99 is out of range: "),
        ([str(data["pretraining"]), "--format", "xml"], 2, "error: --format must be one of text, json"),
    ]
    (tmp_path / "notes.txt").write_text("not data\n")
    for args, code, message in cases:
        res = _inspect(*args, env=env)
        assert res.returncode == code, (args, res.stderr)
        assert res.stderr.startswith(message) and res.stderr.count("\n") == 1, (args, res.stderr)
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in data["pretraining"].glob("*.h5"):
        (bare / f.name).write_bytes(f.read_bytes())
    mark_complete(bare)  # data made without `gptx preprocess`: no tokenizer recorded
    res = _inspect(str(bare), env=env)
    assert res.returncode == 2 and res.stderr.startswith(f"error: {bare} records no tokenizer"), res.stderr
    res = _inspect(str(bare), "--tokenizer", "gpt2", env=env)
    assert res.returncode == 0 and "[[The]]" in res.stdout, res.stderr
