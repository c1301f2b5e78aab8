"""Issue #19: preprocess output is complete only with its data_params.json (written last); failed and
interrupted runs say how to finish; no silent 0-sample output; --train-tokenizer below the byte alphabet."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

INTERRUPT_MID_RUN = """
import os, signal, sys

import gptx_cli.data.hdf5 as hdf5
from gptx_cli.cli import main

write = hdf5.write_sample_file


def write_then_interrupt(path, samples):
    write(path, samples)
    os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered after the first file


hdf5.write_sample_file = write_then_interrupt
sys.argv[0] = "gptx"
main()
"""


def _text(path, lines=200):
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    path.write_text("\n".join(" ".join(words[(i + j) % 8] for j in range(30)) for i in range(lines)) + "\n")


@pytest.fixture
def tok(gpt2_tokenizer_dir):
    return str(gpt2_tokenizer_dir)


def test_ctrl_c_names_resume_and_the_output_is_not_marked_complete(tmp_path, tok, gptx):
    _text(tmp_path / "in.txt")
    (tmp_path / "interrupt.py").write_text(INTERRUPT_MID_RUN)
    args = ["preprocess", "-i", "in.txt", "-o", "out", "--tokenizer", tok, "--max-seq-length", "16",
            "--samples-per-file", "5", "--shard-mb", "0.000001"]  # fmt: skip
    r = subprocess.run(
        [sys.executable, str(tmp_path / "interrupt.py"), *args],
        cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 130
    assert r.stderr.startswith("error: interrupted") and "--resume" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "out/data_params.json").exists()
    # a plain re-run says what to do
    again = gptx(*args, cwd=tmp_path)
    assert (
        again.returncode == 1
        and "unfinished gptx preprocess run" in again.stderr
        and "--resume" in again.stderr
    )
    # after fixing the input, --resume refuses (different inputs) and says --overwrite
    _text(tmp_path / "fixed.txt", lines=210)
    fixed_args = [a if a != "in.txt" else "fixed.txt" for a in args]
    fixed = gptx(*fixed_args, "--resume", cwd=tmp_path)
    assert fixed.returncode == 1 and "--overwrite instead of --resume" in fixed.stderr
    assert gptx(*fixed_args, "--overwrite", cwd=tmp_path).returncode == 0
    assert (tmp_path / "out/data_params.json").exists()


def test_zero_samples_is_an_error_and_marks_nothing_complete(tmp_path, tok, gptx):
    (tmp_path / "in.txt").write_text("hi\n")
    r = gptx("preprocess", "-i", "in.txt", "-o", "out", "--tokenizer", tok, cwd=tmp_path)
    assert r.returncode == 1 and "0 samples from 1 document(s)" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "out/data_params.json").exists()


@pytest.mark.parametrize("size", ["0", "-5", "64"])
def test_train_tokenizer_below_the_byte_alphabet_is_a_one_line_error(tmp_path, gptx, size):
    """It silently fell back to gpt2 (0), failed with 'internal error' (-5), or gave vocab 258 (64)."""
    _text(tmp_path / "in.txt", lines=5)
    r = gptx("preprocess", "-i", "in.txt", "-o", "out", "--train-tokenizer", size, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: --train-tokenizer {size}: a byte-level BPE needs at least 258")
    assert r.stderr.count("\n") == 1
