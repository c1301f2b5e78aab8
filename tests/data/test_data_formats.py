"""Every input format gives the same samples; the three output formats hold the same tokens; the .idx
header is byte-exact to the MMIDIDX layout; the loader reads all of them."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from datagen import jsonl_bytes, write_zst

from gptx_cli.config.spec import DataSpec
from gptx_cli.data.hdf5 import read_samples
from gptx_cli.data.loader import build_dataloader
from gptx_cli.data.mmidx import MMIDIDXReader, MMIDIDXWriter
from gptx_cli.data.preprocess import PreprocessOptions, run_preprocess
from gptx_cli.data.tokenizer import load_tokenizer

MSL = 32


def preprocess(inputs: list[Path | str], out: Path, tokenizer: Path, **kw) -> np.ndarray | None:
    opts = PreprocessOptions(
        inputs=[str(i) for i in inputs], output_dir=str(out), tokenizer=str(tokenizer), max_seq_length=MSL,
        progress=False, **kw,
    )  # fmt: skip
    run_preprocess(opts)
    files = sorted(out.glob("*.h5"))
    if kw.get("output_format", "hdf5") != "hdf5":
        return None
    return np.concatenate([read_samples(f) for f in files])


@pytest.fixture
def docs(documents: list[str]) -> list[str]:
    return documents[:24]


@pytest.fixture
def jsonl_samples(tmp_path: Path, docs: list[str], gpt2_tokenizer_dir: Path) -> np.ndarray:
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(docs))
    samples = preprocess([tmp_path / "in.jsonl"], tmp_path / "out-jsonl", gpt2_tokenizer_dir)
    assert samples is not None and len(samples) > 20
    return samples


def test_compressed_jsonl_variants_match_plain_jsonl(tmp_path, docs, gpt2_tokenizer_dir, jsonl_samples):
    write_zst(tmp_path / "zst/a.jsonl.zst", jsonl_bytes(docs))
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz/a.json.gz").write_bytes(gzip.compress(jsonl_bytes(docs)))
    for name in ("zst", "gz"):
        got = preprocess([tmp_path / name], tmp_path / f"out-{name}", gpt2_tokenizer_dir)
        np.testing.assert_array_equal(got, jsonl_samples)


def test_custom_text_key_and_glob(tmp_path, docs, gpt2_tokenizer_dir, jsonl_samples):
    (tmp_path / "g").mkdir()
    (tmp_path / "g/part-0.jsonl").write_bytes(jsonl_bytes(docs[:10], key="content"))
    (tmp_path / "g/part-1.jsonl").write_bytes(jsonl_bytes(docs[10:], key="content"))
    got = preprocess(
        [str(tmp_path / "g/part-*.jsonl")], tmp_path / "out", gpt2_tokenizer_dir, text_key="content"
    )
    np.testing.assert_array_equal(got, jsonl_samples)  # two small files form one unit: packing continues


def test_parquet_and_datasets_directory_match_jsonl(tmp_path, docs, gpt2_tokenizer_dir, jsonl_samples):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"text": docs, "id": list(range(len(docs)))}), tmp_path / "d.parquet", row_group_size=7
    )
    np.testing.assert_array_equal(
        preprocess([tmp_path / "d.parquet"], tmp_path / "out-pq", gpt2_tokenizer_dir), jsonl_samples
    )
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "ds"))
    np.testing.assert_array_equal(
        preprocess([tmp_path / "ds"], tmp_path / "out-ds", gpt2_tokenizer_dir), jsonl_samples
    )


def test_text_files_are_one_document_each(tmp_path, docs, gpt2_tokenizer_dir, jsonl_samples):
    for i, d in enumerate(docs):
        (tmp_path / "txt").mkdir(exist_ok=True)
        (tmp_path / f"txt/doc-{i:03d}.txt").write_text(d, encoding="utf-8")
    np.testing.assert_array_equal(
        preprocess([tmp_path / "txt"], tmp_path / "out", gpt2_tokenizer_dir), jsonl_samples
    )


def test_no_packing_pads_each_document(tmp_path, docs, gpt2_tokenizer_dir):
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(docs[:6]))
    samples = preprocess([tmp_path / "in.jsonl"], tmp_path / "out", gpt2_tokenizer_dir, pack_sequences=False)
    tok = load_tokenizer(gpt2_tokenizer_dir, backend="tokenizers")
    expected_first = tok.encode(docs[0]) + [tok.eos_id]
    real = int(samples[0, 1].sum())
    assert samples[0, 0, :real].tolist() == expected_first[:real]
    # every document starts a fresh sample: the sample after doc 0's last one begins with doc 1's tokens
    full, tail = divmod(len(expected_first) - 1, MSL)
    n0 = full + (1 if tail + 1 >= 10 else 0)  # a final chunk under min_sequence_len (10) is dropped
    assert samples[n0, 0, :5].tolist() == tok.encode(docs[1])[:5]
    assert (samples[:, 1] == 0).any()  # padding happened, and it is masked
    assert (samples[:, 0][samples[:, 1] == 0] == tok.pad_id).all()


def test_no_packing_counts_documents_without_a_sample_as_discarded(tmp_path, docs, gpt2_tokenizer_dir):
    """ModelZoo's discarded_files (process_docs): a document none of whose chunks gives a sample."""
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes([docs[0], "Hi.", docs[1], "Ok, bye.", docs[2]]))
    samples = preprocess([tmp_path / "in.jsonl"], tmp_path / "out", gpt2_tokenizer_dir, pack_sequences=False)
    post = json.loads((tmp_path / "out" / "data_params.json").read_text())["post-process"]
    assert (post["processed_files"], post["successful_files"], post["discarded_files"]) == (5, 3, 2)
    assert post["n_examples"] == len(samples)
    assert post["num_masked_tokens"] == len(samples) * MSL - int(samples[:, 1].sum())


def test_corpus_and_mmidx_outputs_hold_the_document_stream(tmp_path, docs, gpt2_tokenizer_dir, jsonl_samples):
    tok = load_tokenizer(gpt2_tokenizer_dir, backend="tokenizers")
    stream: list[int] = []
    sizes = []
    for ids in tok.encode_batch(docs):
        ids = ids if ids and ids[-1] == tok.eos_id else [*ids, tok.eos_id]
        stream += ids
        sizes.append(len(ids))
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(docs))

    preprocess([tmp_path / "in.jsonl"], tmp_path / "corpus", gpt2_tokenizer_dir, output_format="corpus")
    import h5py

    with h5py.File(tmp_path / "corpus/data-00000-0000.h5") as f:
        assert f["data"][:].tolist() == stream

    preprocess([tmp_path / "in.jsonl"], tmp_path / "mm", gpt2_tokenizer_dir, output_format="mmidx")
    idx = (tmp_path / "mm/data-00000.idx").read_bytes()
    n = len(sizes)
    pointers = np.concatenate([[0], np.cumsum(sizes)[:-1] * 2]).astype("<i8")  # uint16 = 2 bytes
    expected_idx = (
        b"MMIDIDX\x00\x00"
        + struct.pack("<Q", 1)
        + struct.pack("<B", 8)  # uint16: GPT-2's 50257 ids fit
        + struct.pack("<Q", n)
        + struct.pack("<Q", n + 1)
        + np.asarray(sizes, "<i4").tobytes()
        + pointers.tobytes()
        + np.arange(n + 1, dtype="<i8").tobytes()
    )
    assert idx == expected_idx
    assert (tmp_path / "mm/data-00000.bin").read_bytes() == np.asarray(stream, "<u2").tobytes()
    assert (
        MMIDIDXReader(tmp_path / "mm/data-00000").document(3).tolist()
        == stream[sum(sizes[:3]) : sum(sizes[:4])]
    )

    # the loader cuts both token streams exactly as packing does (full windows; the padded tail is not there)
    full = jsonl_samples[jsonl_samples[:, 1].all(axis=1)]
    for d in ("corpus", "mm"):
        loader = build_dataloader(
            DataSpec(data_dir=[str(tmp_path / d)], batch_size=len(full), max_sequence_length=MSL)
        )
        batch = next(iter(loader))
        np.testing.assert_array_equal(batch["input_ids"].numpy(), full[:, 0])
        np.testing.assert_array_equal(batch["labels"].numpy(), full[:, 2])


def test_mmidx_uses_int32_when_the_vocab_does_not_fit_uint16(tmp_path):
    w = MMIDIDXWriter(tmp_path / "big", np.dtype(np.int32))
    w.add_document(np.array([70000, 1, 2], dtype=np.int64))
    w.close()
    head = (tmp_path / "big.idx").read_bytes()[:34]
    assert head[:9] == b"MMIDIDX\x00\x00" and head[17] == 4  # int32
    assert MMIDIDXReader(tmp_path / "big.idx").document(0).tolist() == [70000, 1, 2]


def test_both_engines_write_identical_files_for_both_tokenizers(
    tmp_path, docs, gpt2_tokenizer_dir, neox_tokenizer_json
):
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(docs))
    for tok in (gpt2_tokenizer_dir, neox_tokenizer_json):
        outs = {}
        for backend in ("tokenizers", "tiktoken"):
            out = tmp_path / f"{tok.stem}-{backend}"
            preprocess([tmp_path / "in.jsonl"], out, tok, tokenizer_backend=backend)
            outs[backend] = [f.read_bytes() for f in sorted(out.glob("*.h5"))]
        assert outs["tokenizers"] == outs["tiktoken"] and outs["tiktoken"]
