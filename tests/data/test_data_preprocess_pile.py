"""End to end: a Pile-layout directory -> `gptx preprocess --dataset pile` -> HDF5 files whose every token
is the reference tokenizer's encoding of the documents plus EOS, packed and shifted; stats add up; the
loader yields the samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from datagen import make_pile

from gptx_cli.config.spec import DataSpec
from gptx_cli.data.hdf5 import read_samples
from gptx_cli.data.loader import build_dataloader
from gptx_cli.data.tokenizer import load_tokenizer

MSL = 64


def reference_stream(tokenizer_path: Path, docs: list[str]) -> list[int]:
    """Documents encoded by the reference engine (`tokenizers`), each followed by EOS unless it ends with it."""
    tok = load_tokenizer(tokenizer_path, backend="tokenizers")
    stream: list[int] = []
    for ids in tok.encode_batch(docs):
        stream += ids if ids and ids[-1] == tok.eos_id else [*ids, tok.eos_id]
    return stream


def reference_samples(stream: list[int], msl: int, pad: int, min_len: int = 10) -> list[tuple]:
    """ModelZoo packing written out plainly: msl+1 windows, stride msl; a short tail padded or dropped."""
    rows = []
    start = 0
    while start + msl + 1 <= len(stream):
        chunk = stream[start : start + msl + 1]
        rows.append((tuple(chunk[:-1]), (1,) * msl, tuple(chunk[1:])))
        start += msl
    tail = stream[start:]
    if len(tail) >= max(2, min_len):
        n = len(tail) - 1
        rows.append(
            (
                tuple(tail[:-1]) + (pad,) * (msl - n),
                (1,) * n + (0,) * (msl - n),
                tuple(tail[1:]) + (pad,) * (msl - n),
            )
        )
    return rows


def as_rows(samples: np.ndarray) -> list[tuple]:
    return [tuple(tuple(int(x) for x in feat) for feat in s) for s in samples]


def test_pile_recipe_end_to_end(
    tmp_path: Path, documents: list[str], gpt2_tokenizer_dir: Path, gptx, tokenizer_env
):
    train = [documents[:20], documents[20:]]
    val = documents[5:25]
    make_pile(tmp_path / "pile", train, val)
    res = gptx(
        "preprocess", "--dataset", "pile", "--input-dir", "pile", "--max-seq-length", str(MSL),
        "--samples-per-file", "9", "--processes", "2", cwd=tmp_path, env=tokenizer_env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    base = tmp_path / "language/datasets/pile_original/hdf5_dataset"  # where the published configs read
    train_dir, val_dir = base / f"train_shuffled_msl{MSL}", base / f"val_msl{MSL}"
    assert sorted(p.name for p in train_dir.iterdir() if not p.name.startswith(".")) == sorted(
        [str(i) for i in range(10)] + ["data_params.json"]
    )

    # val keeps document order: the files in name order are exactly the packed reference stream.
    val_files = sorted(val_dir.glob("*.h5"))
    val_samples = np.concatenate([read_samples(f) for f in val_files])
    assert val_samples.dtype == np.int32 and val_samples.shape[1:] == (3, MSL)
    assert as_rows(val_samples) == reference_samples(reference_stream(gpt2_tokenizer_dir, val), MSL, 50256)

    # train is shuffled over 10 parts: together they hold exactly each input file's packed samples.
    expected = [
        r for docs in train for r in reference_samples(reference_stream(gpt2_tokenizer_dir, docs), MSL, 50256)
    ]
    got = np.concatenate([read_samples(f) for f in sorted(train_dir.glob("*/*.h5"))])
    assert sorted(as_rows(got)) == sorted(expected)
    assert as_rows(got) != expected  # and really shuffled

    # stats add up
    params = json.loads((val_dir / "data_params.json").read_text())
    pp = params["post-process"] | params["gptx"]["post-process"]  # ModelZoo's keys, then gptx's own
    assert pp["n_examples"] == len(val_samples)
    assert pp["num_tokens"] == len(val_samples) * MSL == pp["non_pad_tokens"] + pp["num_pad_tokens"]
    assert pp["loss_valid_tokens"] == int(val_samples[:, 1].sum())
    # ModelZoo's get_data_stats: input positions that are neither pad nor EOS (both 50256 here)
    assert pp["non_pad_tokens"] == int((val_samples[:, 0] != 50256).sum()) < pp["loss_valid_tokens"]
    assert pp["num_masked_tokens"] == pp["num_tokens"] - pp["loss_valid_tokens"]
    assert pp["documents"] == pp["successful_files"] == pp["processed_files"] == len(val)
    assert pp["documents_skipped"] == pp["discarded_files"] == 0 and pp["input_files"] == 1
    assert pp["document_tokens"] == len(reference_stream(gpt2_tokenizer_dir, val))
    assert pp["input_bytes"] > sum(len(d) for d in val)  # JSON lines hold more than the texts
    assert pp["raw_bytes_count"] == pp["normalized_bytes_count"] == sum(len(d.encode()) for d in val)
    assert pp["average_bytes_per_sequence"] == -(-pp["raw_bytes_count"] // pp["n_examples"])
    assert params["processing"]["eos_id"] == 50256 and params["processing"]["max_seq_length"] == MSL
    train_params = json.loads((train_dir / "data_params.json").read_text())
    assert train_params["post-process"]["n_examples"] == len(expected)
    assert train_params["gptx"]["post-process"]["documents"] == len(documents)

    # the loader yields them: val in order; train from all 10 part directories
    loader = build_dataloader(DataSpec(data_dir=[str(val_dir)], batch_size=4, max_sequence_length=MSL))
    batch = next(iter(loader))
    assert batch["input_ids"].tolist() == val_samples[:4, 0].tolist()
    assert batch["labels"].tolist() == val_samples[:4, 2].tolist()
    parts = [str(train_dir / str(i)) for i in range(10)]
    train_loader = build_dataloader(DataSpec(data_dir=parts, batch_size=len(got)), infinite=False)
    everything = next(iter(train_loader))
    assert sorted(
        as_rows(np.stack([everything[k].numpy() for k in ("input_ids", "attention_mask", "labels")], 1))
    ) == sorted(expected)


def test_pile_recipe_with_neox_uses_neox_paths_and_ids(
    tmp_path: Path, documents: list[str], neox_tokenizer_json: Path, gptx, tokenizer_env
):
    make_pile(tmp_path / "pile", [documents[:10]], documents[10:])
    res = gptx(
        "preprocess", "--dataset", "pile", "--input-dir", "pile", "--tokenizer", "neox-20b",
        "--max-seq-length", str(MSL), cwd=tmp_path, env=tokenizer_env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    base = tmp_path / "shuffled/language/datasets/pile_original/hdf5_dataset"
    assert (base / f"train_neox_msl{MSL}" / "9").is_dir()
    val_samples = np.concatenate(
        [read_samples(f) for f in sorted((base / f"val_neox_msl{MSL}").glob("*.h5"))]
    )
    expected = reference_samples(reference_stream(neox_tokenizer_json, documents[10:]), MSL, pad=1)
    assert as_rows(val_samples) == expected
    assert (val_samples[:, 0] == 0).any()  # NeoX EOS is id 0


def test_pile_subset_filter_keeps_only_named_sets(tmp_path: Path, documents: list[str], gptx, tokenizer_env):
    make_pile(tmp_path / "pile", [documents[:12]], documents[:12])  # sets cycle Pile-CC, Github, ArXiv
    res = gptx(
        "preprocess", "--dataset", "pile", "--input-dir", "pile", "--output-dir", "out", "--splits", "val",
        "--pile-subsets", "Github", "--max-seq-length", str(MSL), cwd=tmp_path, env=tokenizer_env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    pp = json.loads((tmp_path / f"out/val_msl{MSL}/data_params.json").read_text())["gptx"]["post-process"]
    assert (pp["documents"], pp["documents_filtered"]) == (4, 8)
    assert not (tmp_path / f"out/train_shuffled_msl{MSL}").exists()
