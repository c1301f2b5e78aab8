"""`gptx preprocess --dataset trc2`: ModelZoo's TRC2 recipe (README clean-up, split_trc_dataset.py, ftfy,
GPT-2, msl 512) end to end, into the paths params_gptj_6B_TRC2.yaml reads, then a continued pre-training."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import ftfy
import numpy as np
import pytest

from gptx_cli.data.hdf5 import read_samples
from gptx_cli.data.tokenizer import load_tokenizer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BASE = Path("language/datasets/model_studio/TRC2/gpt2-tokenized")
README_SED = [
    r"s|</[A-Z0-9]*>||",
    r"s|<[A-Z0-9]*>||",
    r"s|[-0-9: ]*||",
    r"s|TRC2-[-0-9]*||",
    r"s|\[.*\]||",
    r"s|(Click on the Z.*||",
]


def trecblog_file(path: Path, documents: list[str], n_lines: int) -> bytes:
    """A TRC2-headlines-docs-TRECBLOG.v2 in the layout docs/preprocess.md describes: one story per line,
    `<DOC>` date time `TRC2-<date>-<n>` `[codes]` headline and story `(Click on the Z ...)` `</DOC>`,
    with tag-only lines, an invalid UTF-8 byte and a mojibake word for ftfy."""
    words = " ".join(documents).split()
    lines = []
    for i in range(n_lines):
        story = " ".join(words[(i * 37) % (len(words) - 40) :][:30])
        if i % 9 == 0:
            lines.append(b"<DOC>")
            continue
        extra = b" caf\xff bad byte" if i % 13 == 0 else b""
        moji = " the cafÃ© opened" if i % 11 == 0 else ""
        lines.append(
            f"<DOC>2008-01-{1 + i % 28:02d} 0{i % 10}:00:03 TRC2-2008-01-01-{i:04d} [ID:nN{i}] [nLAG] "
            f"Headline {i}: {story}{moji}".encode()
            + extra
            + b" (Click on the Z for related news)</DOC>"
        )
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(data)
    return data


def readme_clean(src: Path) -> str:
    """README.md's commands, run for real: six seds and iconv -c (C locale, as bytes)."""
    data = src.read_bytes()
    env = {"LC_ALL": "C", "PATH": "/usr/bin:/bin"}
    for expr in README_SED:
        data = subprocess.run(["sed", expr], input=data, capture_output=True, check=True, env=env).stdout
    return subprocess.run(
        ["iconv", "-f", "utf-8", "-t", "utf-8", "-c"], input=data, capture_output=True, env=env
    ).stdout.decode("utf-8")


@pytest.mark.skipif(not (shutil.which("sed") and shutil.which("iconv")), reason="needs sed and iconv")
def test_trc2_recipe_end_to_end(tmp_path, documents, gptx, tokenizer_env, gpt2_tokenizer_dir):
    src = tmp_path / "TRC2-headlines-docs-TRECBLOG.v2"
    trecblog_file(src, documents, 235)
    res = gptx("preprocess", "--dataset", "trc2", "--input", src.name, "--buffer-len", "20",
               cwd=tmp_path, env=tokenizer_env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    # split_trc_dataset.py never writes its last chunk: 235 lines -> 11 files of 20, 15 lines left out
    assert "note: 15 of 235 lines left out" in res.stderr

    # The clean-up equals README.md's sed + iconv; the split equals split_trc_dataset.py's.
    clean_lines = readme_clean(src).splitlines(keepends=True)
    split_dir = tmp_path / BASE / "split_files"
    files = [split_dir / f"{src.name}.clean-{k}" for k in range(11)]
    assert [f.read_text() for f in files] == ["".join(clean_lines[20 * k : 20 * k + 20]) for k in range(11)]
    train_meta = (split_dir / "train_meta.txt").read_text().splitlines()
    val_meta = (split_dir / "val_meta.txt").read_text().splitlines()
    assert [Path(p).name for p in train_meta] == [f.name for f in files[:10]]
    assert [Path(p).name for p in val_meta] == [files[10].name]  # int(0.1 * 11) = 1 file to eval

    # One document per split file (create_hdf5_dataset's read_txt), ftfy NFC, GPT-2, EOS, msl 512.
    tok = load_tokenizer(gpt2_tokenizer_dir)
    for name, split_files in (("train", files[:10]), ("eval", files[10:])):
        out = tmp_path / BASE / name
        samples = np.concatenate([read_samples(f) for f in sorted(out.glob("*.h5"))])
        assert samples.shape[1:] == (3, 512)
        expected = []
        for f in split_files:
            expected += tok.encode(ftfy.fix_text(f.read_text(), normalization="NFC")) + [tok.eos_id]
        got = np.concatenate([samples[0, 0, :1], *[s[2][s[1] == 1] for s in samples]])
        assert got.tolist() == expected[: len(got)]
        assert len(expected) - len(got) < 10  # only a final chunk under min_sequence_len is dropped
        params = json.loads((out / "data_params.json").read_text())
        assert params["processing"]["max_seq_length"] == 512
        assert params["gptx"]["processing"]["cleaning"]["use_ftfy"] is True

    # The published config now finds its data, and a tiny GPT-J continues pre-training on it.
    cfg = REPO / "configs" / "params_gptj_6B_TRC2.yaml"
    res = gptx("validate-config", "--strict-paths", str(cfg), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    hf_dir = tiny_hf_gptj(tmp_path / "gptj-tiny")
    shrink = [
        "model.hidden_size=32", "model.num_hidden_layers=2", "model.num_heads=2", "model.filter_size=64",
        "model.rotary_dim=4", "precision.enabled=false", "train_dataloader.batch_size=2",
        "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=false",
        "train_dataloader.prefetch_factor=null", "val_dataloader.batch_size=1", "val_dataloader.num_workers=0",
        "val_dataloader.persistent_workers=false", "val_dataloader.prefetch_factor=null",
        "loop.eval_frequency=2", "loop.eval_steps=1", "logging.log_steps=1",
    ]  # fmt: skip
    sets = [a for s in shrink for a in ("--set", s)]
    res = gptx("continue-pretrain", str(cfg), "--checkpoint-path", str(hf_dir), "--model-dir", "md",
               "--max-steps", "2", *sets, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    records = [json.loads(line) for line in (tmp_path / "md/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2]
    assert any(r["split"] == "eval" for r in records)


def tiny_hf_gptj(path: Path) -> Path:
    """A tiny random GPT-J in the TRC2 config's family (vocab 50400, 512 positions, untied LM head)."""
    import torch
    from transformers import GPTJConfig, GPTJForCausalLM

    torch.manual_seed(0)
    cfg = GPTJConfig(
        vocab_size=50400, n_positions=512, n_embd=32, n_layer=2, n_head=2, rotary_dim=4, n_inner=64,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=False,
    )  # fmt: skip
    GPTJForCausalLM(cfg).save_pretrained(path)
    return path


def test_trc2_missing_or_empty_file_is_one_line(tmp_path, gptx, tokenizer_env):
    res = gptx("preprocess", "--dataset", "trc2", "--input", "nope.v2", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: TRC2 input nope.v2 does not exist")
    (tmp_path / "TRC2-headlines-docs-TRECBLOG.v2").write_bytes(b"")
    res = gptx("preprocess", "--dataset", "trc2", "--input", ".", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == ["error: TRC2 input TRC2-headlines-docs-TRECBLOG.v2 is empty"]
