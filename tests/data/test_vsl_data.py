"""VSL preprocessing (`gptx preprocess --use-vsl`, v2 `dataset.use_vsl`) against ModelZoo 2.10's v2 rules,
and the loader's VSL batches.

The goldens (tests/golden/modelzoo/preprocess, cases `vsl` and `finetune_vsl`) compare with ModelZoo's
own output; here its rules are written out again from its source, list by list, to reach what the
goldens' corpora do not: documents longer than msl, several read chunks, and the input on which
ModelZoo's own run stops (more samples than records in a read chunk).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from datagen import jsonl_bytes, stdlib_documents

from gptx_cli.config.spec import DataSpec
from gptx_cli.data.loader import build_dataloader
from gptx_cli.errors import DataError

MSL = 96
PER_FILE = 5  # files_per_record: several output files


# ---- ModelZoo 2.10's rules, from its source (data_preprocessing/data_reader.py, pretraining_token_generator.py,
# vsl_pretraining_token_generator.py, vsl_finetuning_token_generator.py), list by list.


def mz_read_chunks(entries: list[dict], payloads: list, limit: int) -> list[list]:
    """Reader.accumulate_and_yield for records of at most `limit` bytes: the payloads of each chunk."""

    def size(v) -> int:  # get_data_size for strings and dicts of strings
        return len(v.encode("utf-8")) if isinstance(v, str) else sum(size(k) + size(x) for k, x in v.items())

    chunks, df, df_size = [], [], 0
    for entry, payload in zip(entries, payloads, strict=True):
        entry_size = sum(size(v) for v in entry.values())
        assert entry_size <= limit  # larger one-field records are split (not reimplemented here)
        if df_size + entry_size > limit and df_size != 0:
            chunks.append(df)
            df, df_size = [], 0
        df.append(payload)
        df_size += size(entry)
    if df:
        chunks.append(df)
    return chunks


def mz_chop_doc_into_msl(input_ids: list[int], msl: int, eos_id: int, min_len: int) -> list[list[int]]:
    """chop_doc_into_msl (pack_sequences False), _add_eos_to_doc, create_features_pretraining's length check."""
    max_len = msl + 1
    doc_list = [input_ids[i : i + max_len] for i in range(0, len(input_ids), max_len)]
    last = doc_list[-1]
    if last[-1] != eos_id:
        if len(last) < msl + 1:
            last.append(eos_id)
        else:
            last[-1] = eos_id
    return [d for d in doc_list if len(d) >= min_len]


def mz_group_arrays_by_msl(flat_data: list[list[int]], msl: int) -> list[list[list[int]]]:
    grouped_arrays, current_group, current_length = [], [], 0
    flat_data = sorted(flat_data, key=len, reverse=True)
    for data_element in flat_data:
        num_tokens = len(data_element)
        if current_length + num_tokens > msl:
            if current_group:
                grouped_arrays.append(current_group)
            current_group, current_length = [], 0
        current_group.append(data_element)
        current_length += num_tokens
    if current_group:
        grouped_arrays.append(current_group)
    return grouped_arrays


def mz_create_features_auto_lm_vsl(bin, msl, pad_id):  # noqa: A002
    input_ids, labels, attention_span, position_ids, input_mask = [], [], [], [], []
    for i, sample in enumerate(bin):
        input_ids.extend(sample)
        input_mask.extend([1] * len(sample))  # the text region's loss weight
        labels.extend(sample)
        sample_len = len(sample)
        if i == len(bin) - 1:
            attention_span.extend(list(range(sample_len - 2, -1, -1)))
            position_ids.extend(list(range(sample_len - 1)))
        else:
            attention_span.extend(list(range(sample_len - 1, -1, -1)))
            position_ids.extend(list(range(sample_len)))
    input_ids, input_mask, labels = input_ids[:-1], input_mask[:-1], labels[1:]
    num_pad = msl - len(input_ids)
    input_ids += [pad_id] * num_pad
    labels += [pad_id] * num_pad
    input_mask += [0] * num_pad
    attention_span += [0] * num_pad
    position_ids += [0] * num_pad
    return np.stack([np.int32(x) for x in (input_ids, input_mask, labels, attention_span, position_ids)])


def mz_vsl_pretraining(
    texts: list[str], tok, msl: int, limit: int, min_len: int = 10
) -> tuple[np.ndarray, bool]:
    """(samples, whether ModelZoo's own run stops: a chunk with more samples than records giving pieces)."""
    samples, stops = [], False
    for chunk in mz_read_chunks([{"text": t} for t in texts], texts, limit):
        per_record = [
            mz_chop_doc_into_msl([int(t) for t in tok.encode(x)], msl, tok.eos_id, min_len)
            for x in chunk
            if x
        ]
        groups = mz_group_arrays_by_msl([p for pieces in per_record for p in pieces], msl)
        stops |= len(groups) > sum(1 for pieces in per_record if pieces)
        samples += [mz_create_features_auto_lm_vsl(g, msl, tok.pad_id) for g in groups]
    return np.stack(samples), stops


def mz_append_within_max_length(lengths: list[int], msl: int) -> list[list[int]]:
    """VSLFinetuningTokenGenerator.append_within_max_length, on example indices."""
    tokenized_data, lengths_lookup = [[i] for i in range(len(lengths))], list(lengths)
    i = len(tokenized_data) - 1
    while i > 0:
        for j in range(i - 1, -1, -1):
            if lengths_lookup[i] + lengths_lookup[j] <= msl:
                tokenized_data[j].extend(tokenized_data[i])
                lengths_lookup[j] += lengths_lookup[i]
                del tokenized_data[i]
                del lengths_lookup[i]
                break
        i -= 1
    return tokenized_data


def mz_create_features_finetuning_vsl(bin, msl, pad_id):  # noqa: A002
    input_ids, input_mask, labels, attention_span, position_ids = [], [], [], [], []
    for i, (token_ids, token_mask) in enumerate(bin):
        input_ids.extend(token_ids)
        labels.extend(token_ids)
        input_mask.extend(token_mask)
        sample_len = len(token_ids) if i != len(bin) - 1 else len(token_ids) - 1
        attention_span.extend(list(range(sample_len - 1, -1, -1)))
        position_ids.extend(list(range(sample_len)))
    input_ids, labels, input_mask = input_ids[:-1], labels[1:], input_mask[1:]
    num_pad = msl - len(input_ids)
    input_ids += [pad_id] * num_pad
    labels += [pad_id] * num_pad
    input_mask += [0] * num_pad
    attention_span += [0] * num_pad
    position_ids += [0] * num_pad
    return np.stack([np.int32(x) for x in (input_ids, input_mask, labels, attention_span, position_ids)])


# ---- gptx against them


def _read_dir(d: Path) -> np.ndarray:
    arrays = []
    for f in sorted(d.glob("*.h5")):
        with h5py.File(f, "r") as h:
            assert h["data"].dtype == np.int32 and h["data"].shape[1:] == (5, MSL)
            assert h["data"].shape[0] <= PER_FILE
            arrays.append(np.asarray(h["data"]))
    return np.concatenate(arrays)


@pytest.fixture
def gpt2(gpt2_tokenizer_dir):
    from gptx_cli.data.tokenizer import load_tokenizer

    return load_tokenizer("gpt2", tokenizer_dir=str(gpt2_tokenizer_dir.parent))


@pytest.fixture
def vsl_documents() -> list[str]:
    """Real text, from a few tokens (dropped: under min_sequence_len) to several msl (cut into pieces);
    stripped, so that the v2 text hook's strip changes nothing."""
    docs = stdlib_documents(40)
    return [d[: 5 + 211 * i % 1400].strip() for i, d in enumerate(docs)]


def _v2_yaml(path: Path, out: str, extra: str = "", dataset: str = "") -> None:
    path.write_text(
        f"setup:\n  data: {{source: in.jsonl}}\n  output_dir: {out}\n"
        f"processing:\n  huggingface_tokenizer: gpt2\n  max_seq_length: {MSL}\n  files_per_record: {PER_FILE}\n"
        f"  use_ftfy: false\n  read_hook_kwargs: {{text_key: text}}\n{extra}"
        f"dataset:\n  use_vsl: true\n{dataset}"
    )


def test_vsl_equals_modelzoo_v2_rules_on_real_text(tmp_path, vsl_documents, gptx, tokenizer_env, gpt2):
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(vsl_documents))
    res = gptx(
        "preprocess", "-i", "in.jsonl", "-o", "out", "--use-vsl", "--max-seq-length", str(MSL),
        "--samples-per-file", str(PER_FILE), cwd=tmp_path, env=tokenizer_env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = _read_dir(tmp_path / "out")
    expected, stops = mz_vsl_pretraining(vsl_documents, gpt2, MSL, 1024 * 1024)
    lengths = [len(gpt2.encode(t)) + 1 for t in vsl_documents]
    # the data exercises every rule: dropped, cut into pieces, several documents per sample, padding
    assert min(lengths) < 10 and max(lengths) > 3 * MSL
    assert (np.count_nonzero(expected[:, 4] == 0, axis=1) > 2).any()
    assert got.shape == expected.shape and got.tobytes() == expected.tobytes()
    # the loss mask is 1 on every real position, each document's last token (its EOS) included
    assert (np.diff(got[:, 1], axis=1) <= 0).all() and got[:, 1].sum() > (got[:, 3] > 0).sum()
    assert ("ModelZoo 2.10 stops writing there" in res.stderr) == stops

    params = json.loads((tmp_path / "out" / "data_params.json").read_text())
    assert params["features"] == ["input_ids", "attention_mask", "labels", "attention_span", "position_ids"]
    assert params["dataset"] == {"use_vsl": True}
    assert params["gptx"]["processing"]["read_chunk_size"] == 1024
    assert params["post-process"]["n_examples"] == len(expected)
    assert params["post-process"]["loss_valid_tokens"] == int(expected[:, 1].sum())

    # v2 YAML: dataset.use_vsl gives the same bytes; with read_chunk_size 4 (KiB) it packs per chunk
    _v2_yaml(tmp_path / "v2.yaml", "v2")
    res = gptx("preprocess", "--config", "v2.yaml", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 0, res.stderr
    assert _read_dir(tmp_path / "v2").tobytes() == got.tobytes()
    _v2_yaml(tmp_path / "chunks.yaml", "chunks", extra="  read_chunk_size: 4\n")
    res = gptx("preprocess", "--config", "chunks.yaml", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 0, res.stderr
    assert (
        "read_chunk_size" not in res.stderr
    )  # acted on: VSL packs within its chunks (and cuts larger records)
    chunked, _ = mz_vsl_pretraining(vsl_documents, gpt2, MSL, 4 * 1024)
    assert len(mz_read_chunks([{"text": t} for t in vsl_documents], vsl_documents, 4 * 1024)) > 3
    assert chunked.shape != expected.shape or chunked.tobytes() != expected.tobytes()
    assert _read_dir(tmp_path / "chunks").tobytes() == chunked.tobytes()


def test_input_where_modelzoo_stops_is_written_with_a_note(tmp_path, gptx, tokenizer_env, gpt2) -> None:
    """One document of several msl and a few short ones: one read chunk gives more samples than it has
    records, where ModelZoo 2.10 raises IndexError in data_reader.py (DataFrame.tokenize), logs it and
    writes no sample (exit 0). gptx writes what ModelZoo's packing gives, and says so."""
    long_doc = " ".join(stdlib_documents(3))[:3000].strip()
    texts = [long_doc, "A short document of a few words, enough for one sample.", "Another one, short too."]
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(texts))
    expected, stops = mz_vsl_pretraining(texts, gpt2, MSL, 1024 * 1024)
    assert stops and len(expected) > len(texts)
    res = gptx(
        "preprocess", "-i", "in.jsonl", "-o", "out", "--use-vsl", "--max-seq-length", str(MSL),
        "--samples-per-file", str(PER_FILE), cwd=tmp_path, env=tokenizer_env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (
        f"note: a read chunk gives {len(expected)} VSL samples from 2 documents; ModelZoo 2.10 stops"
        in res.stderr
    )
    got = _read_dir(tmp_path / "out")
    assert got.tobytes() == expected.tobytes()
    # the long document's pieces of msl + 1 tokens are samples of their own: one document, no padding
    full = got[(got[:, 4] == np.arange(MSL)).all(1)]
    assert len(full) >= 2 and (full[:, 3] == np.arange(MSL - 1, -1, -1)).all()


def modelzoo_chunk_case(tok, msl: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(texts, gptx's samples, ModelZoo's) for 1 KiB read chunks: short s1, s2, a document a, an empty
    record, a short b; s1 + s2 + a + b fill 1009..1012 of the 1024 bytes (keys: 4 each), so the empty
    record's 4 bytes make ModelZoo close the chunk before b, which gptx packs with s1 and s2."""
    base = " ".join(stdlib_documents(2)).encode("ascii", "ignore").decode()
    s1, s2 = "Short one, of a few words and more.", "Short two, of a few words or more."
    for k in range(8, 40):
        b = " ".join(["alpha"] * k)
        a = base[: 1011 - len(s1) - len(s2) - len(b)].strip()
        texts = [s1, s2, a, "", b]
        if sum(map(len, texts)) != 1011:
            continue
        modelzoo, stops = mz_vsl_pretraining(texts, tok, msl, 1024)
        gptx_rule, _ = mz_vsl_pretraining([s1, s2, a, b], tok, msl, 1024)
        if not stops and modelzoo.tobytes() != gptx_rule.tobytes():
            return texts, gptx_rule, modelzoo
    raise AssertionError("no texts for the chunk boundary")


def test_where_gptx_packs_differently_from_modelzoo(tmp_path, gptx, tokenizer_env, gpt2) -> None:
    """docs/modelzoo-differences.md, Preprocessing: an empty record counts towards ModelZoo's read chunk
    (its key's 4 bytes), not towards gptx's; a lone one-token piece is dropped, not written as padding."""
    texts, gptx_rule, modelzoo = modelzoo_chunk_case(gpt2, MSL)
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(texts))
    _v2_yaml(tmp_path / "v2.yaml", "out", extra="  read_chunk_size: 1\n")
    res = gptx("preprocess", "--config", "v2.yaml", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 0, res.stderr
    assert modelzoo.tobytes() != gptx_rule.tobytes()
    assert _read_dir(tmp_path / "out").tobytes() == gptx_rule.tobytes()

    from gptx_cli.data.vsl import VSLPacker

    packer = VSLPacker(4, eos_id=0, pad_id=0, min_sequence_len=1)  # [1, 2, 3, 4] + EOS fills a sample
    out = np.concatenate(
        [packer.add_documents(np.array([1, 2, 3, 4, 0], np.int32), np.array([4, 1])), packer.finish()]
    )
    groups = mz_group_arrays_by_msl([[1, 2, 3, 4, 0], [0]], 4)
    assert len(groups) == 2 and not mz_create_features_auto_lm_vsl(groups[1], 4, 0).any()  # padding only
    assert out.tobytes() == mz_create_features_auto_lm_vsl(groups[0], 4, 0)[None].tobytes()


@pytest.fixture
def qa_records() -> list[dict[str, str]]:
    from gptx_cli.data.builtin_corpus import iter_stdlib_qa

    return list(iter_stdlib_qa(limit=60))


def test_finetuning_vsl_equals_modelzoo_rules_and_trains_per_example(
    tmp_path, qa_records, gptx, tokenizer_env, gpt2
) -> None:
    from gptx_cli.data.finetune import encode_record, make_spec

    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa_records))
    keys = ("--mode", "finetuning", "--prompt-key", "prompt", "--completion-key", "completion")
    res = gptx(
        "preprocess", "-i", "in.jsonl", "-o", "out", "--use-vsl", *keys, "--max-seq-length", str(MSL),
        "--samples-per-file", str(PER_FILE), cwd=tmp_path, env=tokenizer_env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = _read_dir(tmp_path / "out")

    spec = make_spec(
        "prompt_completion_text_read_hook", {"prompt_key": "prompt", "completion_key": "completion"}
    )
    eos_text = gpt2.hf.id_to_token(gpt2.eos_id)

    def expected_for(limit: int) -> np.ndarray:
        examples = [encode_record(r, spec, gpt2.hf, eos_text, "in.jsonl") for r in qa_records]
        payloads = [(e.ids, e.mask) if 10 <= len(e.ids) <= MSL else None for e in examples]
        samples = []
        for chunk in mz_read_chunks(qa_records, payloads, limit):
            kept = [p for p in chunk if p is not None]
            for b in mz_append_within_max_length([len(ids) for ids, _ in kept], MSL):
                samples.append(mz_create_features_finetuning_vsl([kept[i] for i in b], MSL, gpt2.pad_id))
        return np.stack(samples)

    expected = expected_for(1024 * 1024)
    assert got.tobytes() == expected.tobytes()
    # several examples per sample, each with its own positions; the loss mask is aligned with labels,
    # so no example's first token (a prompt token) is a target of the one before
    starts = (got[:, 4] == 0) & (got[:, 1] + got[:, 3] > 0)
    assert (starts.sum(1) > 2).any()
    before = np.roll(starts, -1, axis=1)
    assert (got[:, 1][before & (np.arange(MSL) < MSL - 1)] == 0).all()
    params = json.loads((tmp_path / "out" / "data_params.json").read_text())
    assert params["features"][3:] == ["attention_span", "position_ids"] and params["dataset"] == {
        "use_vsl": True
    }

    # v2 YAML: the same bytes; with read_chunk_size 2 (KiB) ModelZoo's bins stay within each read chunk
    for name, chunk in (("v2", ""), ("chunks", "  read_chunk_size: 2\n")):
        (tmp_path / f"{name}.yaml").write_text(
            f"setup:\n  data: {{source: in.jsonl}}\n  output_dir: {name}\n  mode: finetuning\n"
            f"processing:\n  huggingface_tokenizer: gpt2\n  max_seq_length: {MSL}\n  files_per_record: {PER_FILE}\n"
            "  read_hook: prompt_completion_text_read_hook\n"
            f"  read_hook_kwargs: {{prompt_key: prompt, completion_key: completion}}\n{chunk}"
            "dataset:\n  use_vsl: true\n  pack_sequences: true\n"
        )
        res = gptx("preprocess", "--config", f"{name}.yaml", cwd=tmp_path, env=tokenizer_env)
        assert res.returncode == 0, res.stderr
        assert (
            "warning: dataset.pack_sequences: accepted for ModelZoo compatibility; has no effect"
            in res.stderr
        )
        want = expected if not chunk else expected_for(2 * 1024)
        assert _read_dir(tmp_path / name).tobytes() == want.tobytes(), name
    assert len(expected_for(2 * 1024)) > len(expected)

    # the loader reads it as VSL data: per-example spans and positions reach the model
    from gptx_cli.data.hdf5 import mark_complete

    mark_complete(tmp_path / "out")
    batch = next(
        iter(
            build_dataloader(
                DataSpec(data_dir=[str(tmp_path / "out")], batch_size=4, use_vsl=True), infinite=False
            )
        )
    )
    assert list(batch) == ["input_ids", "attention_mask", "labels", "attention_span", "position_ids"]
    assert np.array_equal(batch["position_ids"].numpy(), got[:4, 4])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--use-vsl", "--output-format", "corpus"),
            "--use-vsl writes HDF5 sample files; --output-format corpus",
        ),
        (
            ("--use-vsl", "--output-format", "mmidx"),
            "--use-vsl writes HDF5 sample files; --output-format mmidx",
        ),
        (
            ("--mode", "finetuning", "--prompt-key", "p", "--completion-key", "c", "--pack-sequences"),
            "--pack-sequences with --mode finetuning: ModelZoo's finetuning generator never reads pack_sequences",
        ),
    ],
)
def test_what_vsl_cannot_write_is_refused_in_one_line(
    tmp_path, documents, gptx, tokenizer_env, args, message
):
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(documents[:3]))
    res = gptx("preprocess", "-i", "in.jsonl", "-o", "out", *args, cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[0].startswith(f"error: {message}"), res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()


def test_v2_fold_long_doc_is_named_as_without_effect(tmp_path, vsl_documents, gptx, tokenizer_env) -> None:
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(vsl_documents[:8]))
    _v2_yaml(tmp_path / "v2.yaml", "out", dataset="  fold_long_doc: false\n")
    res = gptx("preprocess", "--config", "v2.yaml", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 0, res.stderr
    assert (
        "v2.yaml:12:3: warning: dataset.fold_long_doc: accepted for ModelZoo compatibility; has no effect in "
        "gptx: ModelZoo 2.10's VSL token generator reads it and never uses it"
    ) in res.stderr


def _write_vsl_dir(d: Path) -> np.ndarray:
    from gptx_cli.data.hdf5 import mark_complete, write_sample_file
    from gptx_cli.data.vsl import VSLPacker

    rng = np.random.default_rng(0)
    lengths = rng.integers(12, 40, size=30)
    tokens = rng.integers(1, 100, size=int(lengths.sum())).astype(np.int32)
    packer = VSLPacker(32, eos_id=0, pad_id=0)
    samples = np.concatenate([packer.add_documents(tokens, lengths), packer.finish()])
    d.mkdir(parents=True)
    write_sample_file(d / "data-0.h5", samples)
    mark_complete(d)
    return samples


def test_loader_yields_position_ids_and_attention_span(tmp_path) -> None:
    samples = _write_vsl_dir(tmp_path / "vsl")
    spec = DataSpec(data_dir=[str(tmp_path / "vsl")], batch_size=4, use_vsl=True)
    batch = next(iter(build_dataloader(spec, infinite=False)))
    assert list(batch) == ["input_ids", "attention_mask", "labels", "attention_span", "position_ids"]
    for k, name in enumerate(batch):
        assert np.array_equal(batch[name].numpy(), samples[:4, k])
    # without use_vsl the same files give ModelZoo's three rows
    plain = next(
        iter(build_dataloader(DataSpec(data_dir=[str(tmp_path / "vsl")], batch_size=4), infinite=False))
    )
    assert list(plain) == ["input_ids", "attention_mask", "labels"]


def test_use_vsl_over_data_without_vsl_rows_names_the_data_dir(tmp_path) -> None:
    from gptx_cli.data.hdf5 import mark_complete, write_sample_file

    (tmp_path / "plain").mkdir()
    write_sample_file(tmp_path / "plain" / "data-0.h5", np.ones((4, 3, 32), dtype=np.int32))
    mark_complete(tmp_path / "plain")
    spec = DataSpec(data_dir=[str(tmp_path / "plain")], batch_size=4, use_vsl=True)
    with pytest.raises(DataError) as err:
        build_dataloader(spec)
    assert f"use_vsl: data_dir {tmp_path / 'plain'} holds samples without VSL rows" in err.value.message
    assert "\n" not in err.value.message


def test_use_vsl_on_a_gpthdf5mapdataprocessor_section_validates(gptx) -> None:
    from gptx_testing import REPO

    from gptx_cli.config import load_run_spec

    config = str(REPO / "configs" / "tiny_gptj.yaml")
    res = gptx("validate-config", config, "--set", "train_dataloader.use_vsl=true")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "tiny_gptj.yaml: ok" in res.stdout
    spec = load_run_spec(config, overrides=("train_dataloader.use_vsl=true",))
    assert spec.train_data is not None and spec.train_data.use_vsl
    assert spec.val_data is not None and not spec.val_data.use_vsl


def test_v2_use_vsl_in_nlg_mode_is_refused_with_its_line(tmp_path, gptx, tokenizer_env) -> None:
    (tmp_path / "in.jsonl").write_text('{"context": "a", "completion": "b"}\n')
    (tmp_path / "nlg.yaml").write_text(
        "setup:\n  data: {source: in.jsonl}\n  output_dir: out\n  mode: nlg\n"
        "processing:\n  huggingface_tokenizer: gpt2\n  read_hook: nlg_read_hook\n"
        "  read_hook_kwargs: {context_key: context, completion_key: completion}\n"
        "dataset:\n  use_vsl: true\n"
    )
    res = gptx("preprocess", "--config", "nlg.yaml", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode != 0
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: nlg.yaml:10:3: dataset.use_vsl: use_vsl: true is not supported by gptx in nlg mode"
        )
    ), res.stderr
