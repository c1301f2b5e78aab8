"""VSL preprocessing (`gptx preprocess --use-vsl`, v2 `dataset.use_vsl`) against ModelZoo's rules, and
the loader's VSL batches."""

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
PER_FILE = 5  # ModelZoo's files_per_record: small, so samples are written out while bins are open


# ---- ModelZoo's rules, reimplemented here from its source (hdf5_preprocessing/utils.py and
# hdf5_dataset_preprocessors.py, VSLLMDataPreprocessor), list by list as it writes them.


def mz_create_features_auto_lm_vsl(bin, max_sequence_length, num_pad, pad_id=0):  # noqa: A002
    input_ids, labels, attention_span, position_ids = [], [], [], []
    input_mask = []
    for i, sample in enumerate(bin):
        input_ids.extend(sample)
        labels.extend(sample)
        sample_len = len(sample)
        if i == len(bin) - 1:
            attention_span.extend(list(range(sample_len - 2, -1, -1)))
            position_ids.extend(list(range(sample_len - 1)))
            input_mask.extend([1] * (sample_len - 1))
        else:
            attention_span.extend(list(range(sample_len - 1, -1, -1)))
            position_ids.extend(list(range(sample_len)))
            input_mask.extend([1] * (sample_len - 1) + [0])
    input_ids = input_ids[:-1]
    labels = labels[1:]
    num_pad = max_sequence_length - len(input_ids)
    padding = [pad_id] * num_pad
    input_ids.extend(padding)
    labels.extend(padding)
    padding = [0] * num_pad
    input_mask.extend(padding)
    attention_span.extend(padding)
    position_ids.extend(padding)
    assert all(
        len(x) == max_sequence_length for x in (input_ids, labels, input_mask, attention_span, position_ids)
    ), "Wrong sequence length"
    return np.stack([np.int32(input_ids), np.int32(input_mask), np.int32(labels), np.int32(attention_span), np.int32(position_ids)])  # fmt: skip


class MZPlacement:
    """VSLLMDataPreprocessor.tokenize_text / vsl_sample_generator / preprocessing_generator."""

    def __init__(self, msl, pad_id, min_sequence_len, files_per_record, modelzoo_accounting=False):
        self.max_seq_length, self.pad_id = msl, pad_id
        self.min_sequence_len, self.files_per_record = min_sequence_len, files_per_record
        self.fold_long_doc = True
        self.modelzoo_accounting = modelzoo_accounting
        self.chunk_lengths, self.tokenized_chunks, self.chunk_count = [], [], 0
        self.samples = []

    def _add_new_chunk(self, tokenized_text, tokenized_length):
        self.chunk_lengths.append(self.max_seq_length - tokenized_length)
        self.tokenized_chunks.append([tokenized_text])
        self.chunk_count += 1

    def tokenize_text(self, tokenized_text):  # tokens with EOS already appended
        tokenized_text_len = len(tokenized_text)
        if tokenized_text_len < self.min_sequence_len:
            return
        if tokenized_text_len > self.max_seq_length + 1:
            for i in range(0, tokenized_text_len, self.max_seq_length):
                if tokenized_text_len - i < self.max_seq_length + 1:
                    tokenized_text = tokenized_text[i:]
                    tokenized_text_len = tokenized_text_len - i
                else:
                    self._add_new_chunk(tokenized_text[i : i + self.max_seq_length + 1], self.max_seq_length)
        if tokenized_text_len < 2:
            return
        tokenized_text_len -= 1
        create_new_chunk = True
        for idx in range(self.chunk_count - 1, -1, -1):
            # The one change (docs/preprocess.md): ModelZoo charges len - 1 here, which overflows msl;
            # a document joining a bin costs its full length.
            cost = tokenized_text_len if self.modelzoo_accounting else tokenized_text_len + 1
            if cost <= self.chunk_lengths[idx]:
                self.tokenized_chunks[idx].append(tokenized_text)
                self.chunk_lengths[idx] -= cost
                create_new_chunk = False
                break
        if create_new_chunk:
            self._add_new_chunk(tokenized_text, tokenized_text_len)

    def vsl_sample_generator(self, generation_len):
        for _ in range(generation_len):
            bin = self.tokenized_chunks.pop(0)  # noqa: A001
            num_pad = self.chunk_lengths.pop(0)
            self.chunk_count -= 1
            self.samples.append(
                mz_create_features_auto_lm_vsl(bin, self.max_seq_length, num_pad, self.pad_id)
            )

    def preprocessing_generator(self, tokens):
        self.tokenize_text(tokens)
        if self.chunk_count > self.files_per_record:
            self.vsl_sample_generator(self.files_per_record)

    def finish(self):
        self.vsl_sample_generator(self.chunk_count)
        return np.stack(self.samples)


@pytest.fixture
def vsl_documents() -> list[str]:
    """Real text, lengths from a few tokens (dropped: under min_sequence_len) to several MSLs (folded)."""
    docs = stdlib_documents(40)
    # stripped, so that the v2 text hook's strip changes nothing
    return [d[: 5 + 211 * i % 1400].strip() for i, d in enumerate(docs)]


def _read_dir(d: Path) -> np.ndarray:
    arrays = []
    for f in sorted(d.glob("*.h5")):
        with h5py.File(f, "r") as h:
            assert h["data"].dtype == np.int32 and h["data"].shape[1:] == (5, MSL)
            assert h["data"].shape[0] <= PER_FILE
            arrays.append(np.asarray(h["data"]))
    return np.concatenate(arrays)


def test_vsl_hdf5_equals_modelzoo_rules_on_real_text(
    tmp_path, vsl_documents, gptx, tokenizer_env, gpt2_tokenizer_dir
):
    from gptx_cli.data.tokenizer import load_tokenizer

    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(vsl_documents))
    res = gptx(
        "preprocess", "-i", "in.jsonl", "-o", "out", "--use-vsl", "--max-seq-length", str(MSL),
        "--samples-per-file", str(PER_FILE), cwd=tmp_path, env=tokenizer_env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    got = _read_dir(tmp_path / "out")

    tok = load_tokenizer("gpt2", tokenizer_dir=str(gpt2_tokenizer_dir.parent))
    mz = MZPlacement(MSL, tok.pad_id, min_sequence_len=10, files_per_record=PER_FILE)
    lengths = []
    for text in vsl_documents:
        tokens = [int(t) for t in tok.encode(text)] + [tok.eos_id]
        lengths.append(len(tokens))
        mz.preprocessing_generator(tokens)
    expected = mz.finish()
    # the data exercises every rule: dropped, folded, several documents per sample, padding
    assert min(lengths) < 10 and max(lengths) > 3 * MSL
    assert (np.count_nonzero(expected[:, 4] == 0, axis=1) > 2).any()
    assert got.shape == expected.shape and got.tobytes() == expected.tobytes()

    params = json.loads((tmp_path / "out" / "data_params.json").read_text())
    assert params["features"] == ["input_ids", "attention_mask", "labels", "attention_span", "position_ids"]
    assert params["dataset"] == {"use_vsl": True, "fold_long_doc": True}
    assert params["post-process"]["n_examples"] == len(expected)
    assert params["post-process"]["loss_valid_tokens"] == int(expected[:, 1].sum())

    # v2 YAML: dataset.use_vsl gives the same bytes
    (tmp_path / "v2.yaml").write_text(
        "setup:\n  data: {source: in.jsonl}\n  output_dir: v2\n"
        f"processing:\n  huggingface_tokenizer: gpt2\n  max_seq_length: {MSL}\n  files_per_record: {PER_FILE}\n"
        "  use_ftfy: false\n  read_hook_kwargs: {data_keys: {text_key: text}}\n"
        "dataset:\n  use_vsl: true\n"
    )
    res = gptx("preprocess", "--config", "v2.yaml", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode == 0, res.stderr
    assert _read_dir(tmp_path / "v2").tobytes() == got.tobytes()


def test_modelzoo_accounting_overflows_where_gptx_opens_a_new_sample() -> None:
    from gptx_cli.data.vsl import VSLPacker

    docs = [list(range(1, 7)), list(range(11, 17))]  # 6 tokens each (EOS included), msl 10
    mz = MZPlacement(10, 0, min_sequence_len=2, files_per_record=100, modelzoo_accounting=True)
    for d in docs:
        mz.preprocessing_generator(d)
    with pytest.raises(AssertionError, match="Wrong sequence length"):
        mz.finish()  # 11 input tokens for a sample of 10
    packer = VSLPacker(10, eos_id=0, pad_id=0, min_sequence_len=2)
    tokens = np.array(docs[0] + docs[1], dtype=np.int32)
    out = np.concatenate([packer.add_documents(tokens, np.array([6, 6])), packer.finish()])
    fixed = MZPlacement(10, 0, min_sequence_len=2, files_per_record=100)
    for d in docs:
        fixed.preprocessing_generator(d)
    assert len(out) == 2 and out.tobytes() == fixed.finish().tobytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--output-format", "corpus"), "--use-vsl writes HDF5 sample files; --output-format corpus"),
        (("--output-format", "mmidx"), "--use-vsl writes HDF5 sample files; --output-format mmidx"),
        (
            ("--mode", "finetuning", "--prompt-key", "p", "--completion-key", "c"),
            "--use-vsl writes ModelZoo's pretraining VSL samples; --mode finetuning",
        ),
    ],
)
def test_outputs_without_vsl_layout_refuse_use_vsl(tmp_path, documents, gptx, tokenizer_env, args, message):
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(documents[:3]))
    res = gptx(
        "preprocess", "-i", "in.jsonl", "-o", "out", "--use-vsl", *args, cwd=tmp_path, env=tokenizer_env
    )
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {message}"), res.stderr
    assert "Traceback" not in res.stderr


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


def test_v2_use_vsl_outside_pretraining_is_refused_with_its_line(tmp_path, gptx, tokenizer_env) -> None:
    (tmp_path / "in.jsonl").write_text('{"p": "a", "c": "b"}\n')
    (tmp_path / "ft.yaml").write_text(
        "setup:\n  data: {source: in.jsonl}\n  output_dir: out\n  mode: finetuning\n"
        "processing:\n  huggingface_tokenizer: gpt2\n  read_hook: prompt_completion_text_read_hook\n"
        "  read_hook_kwargs: {prompt_key: p, completion_key: c}\n"
        "dataset:\n  use_vsl: true\n"
    )
    res = gptx("preprocess", "--config", "ft.yaml", cwd=tmp_path, env=tokenizer_env)
    assert res.returncode != 0
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: ft.yaml:10:3: dataset.use_vsl: use_vsl: true is not supported by gptx in finetuning mode"
        )
    ), res.stderr
