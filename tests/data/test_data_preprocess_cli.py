"""`gptx preprocess` on the command line: bad input gets one clear line; output is deterministic whatever
--processes; a killed run resumes without losing or duplicating documents; v2 YAML; --train-tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datagen import jsonl_bytes, write_zst

from gptx_cli.data.hdf5 import read_samples


def _files(d: Path) -> dict[str, bytes]:
    """Every output file's bytes (data_params.json without its output_dirs, which name the directory)."""
    files = sorted(p for p in d.rglob("*") if p.is_file() and STATE not in p.parts)
    out = {str(p.relative_to(d)): p.read_bytes() for p in files}
    params = json.loads(out.pop("data_params.json"))
    assert params["setup"].pop("output_dir") == params["gptx"]["setup"].pop("output_dir") == d.name
    out["data_params"] = json.dumps(params).encode()
    return out


STATE = ".gptx-preprocess"


def _one_line_error(res) -> str:
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    return lines[-1]


def test_malformed_line_is_reported_with_file_and_line_and_skipped(tmp_path, documents, gptx, tokenizer_env):
    good = jsonl_bytes(documents[:4]).splitlines(keepends=True)
    bad = good[:2] + [b'{"text": "unterminated\n'] + good[2:] + [b'{"text": "caf\xe9 latin-1"}\n']
    (tmp_path / "in.jsonl").write_bytes(b"".join(bad))
    res = gptx(
        "preprocess", "-i", "in.jsonl", "-o", "out", "--max-seq-length", "32", cwd=tmp_path, env=tokenizer_env
    )
    assert res.returncode == 0, res.stderr
    assert "in.jsonl:3: malformed JSON" in res.stderr
    assert "in.jsonl:6: not valid UTF-8" in res.stderr
    params = json.loads((tmp_path / "out/data_params.json").read_text())
    pp = params["gptx"]["post-process"]
    assert (pp["documents"], pp["documents_skipped"]) == (4, 2)
    # ModelZoo's files are the documents read: the skipped records are none of them
    assert (params["post-process"]["processed_files"], params["post-process"]["discarded_files"]) == (4, 0)

    res = gptx("preprocess", "-i", "in.jsonl", "-o", "strict", "--strict", cwd=tmp_path, env=tokenizer_env)
    assert "in.jsonl:3: malformed JSON" in _one_line_error(res)
    assert not any((tmp_path / "strict").glob("*.h5"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: (p / "in.jsonl").write_bytes(jsonl_bytes(["a doc"], key="body")),
            "in.jsonl:1: no key 'text'",
        ),
        (lambda p: (p / "in.jsonl").write_bytes(b""), "no documents in in.jsonl"),
        (
            lambda p: (p / "in.jsonl.zst").write_bytes(
                write_zst(p / "x.zst", jsonl_bytes(["x" * 9000] * 50)).read_bytes()[:-40]
            ),
            "truncated .zst",
        ),  # noqa: E501
        (lambda p: None, "input in.jsonl does not exist"),
    ],
    ids=["missing-text-key", "empty", "truncated-zst", "missing-file"],
)
def test_bad_input_gets_a_clear_one_line_error(tmp_path, make, message, gptx, tokenizer_env):
    make(tmp_path)
    name = "in.jsonl.zst" if (tmp_path / "in.jsonl.zst").exists() else "in.jsonl"
    res = gptx("preprocess", "-i", name, "-o", "out", cwd=tmp_path, env=tokenizer_env)
    assert message in _one_line_error(res)
    assert not any((tmp_path / "out").glob("*.h5")) if (tmp_path / "out").exists() else True


def test_existing_output_refused_unless_overwrite_and_hub_offline_fails(
    tmp_path, documents, gptx, tokenizer_env
):
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(documents[:3]))
    (tmp_path / "out").mkdir()
    (tmp_path / "out/keep.txt").write_text("mine")
    res = gptx("preprocess", "-i", "in.jsonl", "-o", "out", cwd=tmp_path, env=tokenizer_env)
    assert "out already exists" in _one_line_error(res) and "--overwrite" in res.stderr
    assert (tmp_path / "out/keep.txt").exists()
    res = gptx("preprocess", "-i", "in.jsonl", "-o", "out", "--overwrite", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 0 and (tmp_path / "out/keep.txt").read_text() == "mine"  # only its own files go
    first = sorted((tmp_path / "out").glob("*.h5"))
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(documents[:1]))
    res = gptx("preprocess", "-i", "in.jsonl", "-o", "out", "--overwrite", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 0 and sorted((tmp_path / "out").glob("*.h5")) == first[:1]
    res = gptx("preprocess", "-i", "someorg/some_dataset", "-o", "hub", cwd=tmp_path, env=tokenizer_env)
    assert "hub is offline" in _one_line_error(res)


def test_output_is_byte_identical_whatever_the_number_of_processes(tmp_path, documents, gptx, tokenizer_env):
    for i in range(3):
        write_zst(tmp_path / f"in/{i}.jsonl.zst", jsonl_bytes(documents[i * 13 : (i + 1) * 13]))
    common = ["--max-seq-length", "48", "--samples-per-file", "10", "--shard-mb", "0.000001"]
    for n in ("1", "2"):
        res = gptx(
            "preprocess", "-i", "in", "-o", f"out{n}", "-p", n, *common, cwd=tmp_path, env=tokenizer_env
        )
        assert res.returncode == 0, res.stderr
    one, two = _files(tmp_path / "out1"), _files(tmp_path / "out2")
    assert len([k for k in one if k.endswith(".h5")]) >= 6
    assert one == two


KILL_MID_UNIT = """
import os, signal, sys

import gptx_cli.data.hdf5 as hdf5
from gptx_cli.cli import main

write = hdf5.write_sample_file


def write_then_die(path, samples):
    write(path, samples)
    if os.path.basename(path) == "data-00002-0000.h5":
        os.kill(os.getpid(), signal.SIGKILL)


hdf5.write_sample_file = write_then_die
sys.argv[0] = "gptx"
main()
"""


def test_killed_run_resumes_to_the_same_output(tmp_path, documents, gptx, tokenizer_env):
    for i in range(4):
        write_zst(tmp_path / f"in/{i}.jsonl.zst", jsonl_bytes(documents[i * 10 : (i + 1) * 10]))
    common = ["-i", "in", "--max-seq-length", "48", "--shard-mb", "0.000001", "--samples-per-file", "5"]
    assert gptx("preprocess", *common, "-o", "ref", cwd=tmp_path, env=tokenizer_env).returncode == 0
    # The real CLI, launched so that it SIGKILLs itself right after unit 2 wrote its first file:
    # 2 complete units and a partial one, at a point a timed external kill could not hit reliably.
    (tmp_path / "kill_mid_unit.py").write_text(KILL_MID_UNIT)
    killed = subprocess.run(
        [sys.executable, str(tmp_path / "kill_mid_unit.py"), "preprocess", *common, "-o", "out"],
        cwd=tmp_path,
        env={**os.environ, **tokenizer_env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr  # SIGKILL, mid-run
    assert not (tmp_path / "out/data_params.json").exists()
    assert (tmp_path / "out/data-00002-0000.h5").exists()  # unit 2 had started writing when killed
    assert len(list((tmp_path / "out").glob("data-00002-*"))) < len(
        list((tmp_path / "ref").glob("data-00002-*"))
    )
    (tmp_path / "out/.data-00002-0001.h5.tmp-1234").write_bytes(b"half-written by the killed process")
    res = gptx("preprocess", *common, "-o", "out", cwd=tmp_path, env=tokenizer_env)
    assert "--resume" in _one_line_error(res)
    res = gptx("preprocess", *common, "-o", "out", "--resume", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 0, res.stderr
    assert _files(tmp_path / "out") == _files(tmp_path / "ref")


def test_modelzoo_v2_yaml_config(tmp_path, documents, gptx, tokenizer_env, gpt2_tokenizer_dir):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/a.jsonl").write_bytes(jsonl_bytes(documents[:8], key="content"))
    (tmp_path / "cfg.yaml").write_text(
        "setup:\n  data:\n    source: ./data\n    type: local\n  output_dir: ./out\n  processes: 1\n"
        f"processing:\n  custom_tokenizer: {gpt2_tokenizer_dir}\n  max_seq_length: 40\n"
        "  read_hook_kwargs:\n    data_keys:\n      text_key: content\n"
    )
    res = gptx("preprocess", "--config", "cfg.yaml", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 0, res.stderr
    samples = np.concatenate([read_samples(f) for f in sorted((tmp_path / "out").glob("*.h5"))])
    assert samples.shape[2] == 40
    (tmp_path / "bad.yaml").write_text("setup:\n  max_seq_length: 40\n")
    res = gptx("preprocess", "--config", "bad.yaml", cwd=tmp_path, env=tokenizer_env)
    assert "key 'max_seq_length' belongs in section 'processing', not 'setup'" in _one_line_error(res)


def test_train_tokenizer_saves_and_uses_it(tmp_path, documents, gptx, tokenizer_env):
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(documents))
    res = gptx(
        "preprocess", "-i", "in.jsonl", "-o", "out", "--train-tokenizer", "400", "--max-seq-length", "32",
        cwd=tmp_path, env=tokenizer_env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    from gptx_cli.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tmp_path / "out/tokenizer.json")
    assert tok.vocab_size == 400 and tok.eos_id == 0 and tok.pad_id == 1
    samples = np.concatenate([read_samples(f) for f in sorted((tmp_path / "out").glob("*.h5"))])
    assert samples[0, 0, :10].tolist() == tok.encode(documents[0])[:10]
    assert samples.max() < 400
    assert json.loads((tmp_path / "out/data_params.json").read_text())["processing"]["vocab_size"] == 400
    # what train / eval / convert look up: the tokenizer recorded in gptx.processing
    from gptx_cli.data.params import tokenizer_of

    assert tokenizer_of(tmp_path / "out") == str(tmp_path / "out/tokenizer.json")  # found beside the file


def test_usage_errors_come_before_the_tokenizer_is_loaded(tmp_path, gptx):
    """A missing --output-dir or --input-dir is named at once, not after the tokenizer preset has
    failed to load (offline, the hub retries for about 20 s before it gives up)."""
    env = {"GPTX_TOKENIZER_DIR": str(tmp_path / "no_presets"), "HF_HUB_OFFLINE": "1"}
    res = gptx("preprocess", "-i", "in.jsonl", "--tokenizer", "gpt2", cwd=tmp_path, env=env)
    assert _one_line_error(res).startswith("error: --output-dir is required")
    res = gptx("preprocess", "--dataset", "pile", "--tokenizer", "gpt2", cwd=tmp_path, env=env)
    assert _one_line_error(res).startswith("error: --dataset pile needs --input-dir")
