"""weights.py: lazy reading of safetensors / .bin (single and sharded) and the sharded writer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gptx_cli.errors import CheckpointError
from gptx_cli.weights import ShardedSafetensorsWriter, open_tensors, parse_size, save_tensors


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(8, 4, generator=g),
        "b.bias": torch.randn(4, generator=g).to(torch.bfloat16),
        "c.scalar": torch.tensor(3.5, dtype=torch.float16),
        "d.ids": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "e.empty": torch.zeros(0, 5),
    }


def _assert_same(src, expected: dict[str, torch.Tensor]) -> None:
    assert sorted(src.keys()) == sorted(expected)
    for name, t in expected.items():
        assert src.shape(name) == tuple(t.shape)
        assert src.dtype(name) == t.dtype
        got = src.get(name)
        assert got.dtype == t.dtype and torch.equal(got, t), name


def test_writer_single_shard_is_readable_by_safetensors(tmp_path):
    ts = _tensors()
    save_tensors(tmp_path, ts.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        for name, t in ts.items():
            assert torch.equal(f.get_tensor(name), t)
    _assert_same(open_tensors(tmp_path), ts)


def test_writer_shards_by_size_and_writes_index(tmp_path):
    ts = {f"w{i}": torch.full((10,), float(i)) for i in range(5)}  # 40 bytes each
    w = save_tensors(tmp_path, ts.items(), shard_size_bytes=100)  # two tensors per shard
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
        "model.safetensors.index.json",
    ]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 200 == w.total_bytes
    assert index["weight_map"]["w4"] == "model-00003-of-00003.safetensors"
    _assert_same(open_tensors(tmp_path), ts)
    _assert_same(open_tensors(tmp_path / "model.safetensors.index.json"), ts)


def test_writer_leaves_no_files_when_interrupted(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardedSafetensorsWriter(tmp_path, 50) as w:
            w.add("x", torch.zeros(20))
            w.add("y", torch.zeros(20))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_reads_safetensors_written_by_the_reference_library(tmp_path):
    ts = _tensors()
    save_file(ts, tmp_path / "x.safetensors", metadata={"k": "v"})
    src = open_tensors(tmp_path / "x.safetensors")
    assert src.metadata == {"k": "v"}
    _assert_same(src, ts)


def test_reads_single_and_sharded_bin(tmp_path):
    ts = _tensors()
    single = tmp_path / "single"
    single.mkdir()
    torch.save(ts, single / "pytorch_model.bin")
    _assert_same(open_tensors(single), ts)

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    names = list(ts)
    torch.save({n: ts[n] for n in names[:2]}, sharded / "pytorch_model-00001-of-00002.bin")
    torch.save({n: ts[n] for n in names[2:]}, sharded / "pytorch_model-00002-of-00002.bin")
    wm = {n: f"pytorch_model-0000{1 if i < 2 else 2}-of-00002.bin" for i, n in enumerate(names)}
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    _assert_same(open_tensors(sharded), ts)


def test_truncated_safetensors_names_file_and_tensor(tmp_path):
    save_file({"big": torch.zeros(1000)}, tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-100])
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: truncated safetensors file: tensor 'big'"
    ):
        open_tensors(tmp_path)


def test_garbage_safetensors_header_is_corrupt(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: corrupt safetensors file \(header is not JSON\)"
    ):
        open_tensors(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="shorter than its 8-byte header"):
        open_tensors(tmp_path)


def test_corrupt_bin_names_file(tmp_path):
    torch.save({"w": torch.zeros(100)}, tmp_path / "pytorch_model.bin")
    data = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: corrupt or unreadable PyTorch file"):
        open_tensors(tmp_path)


def test_missing_shard_and_bad_index_are_named(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-1.safetensors"}})
    )
    with pytest.raises(
        CheckpointError, match=r"model-1\.safetensors: shard named in .*index\.json is missing"
    ):
        open_tensors(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: corrupt index file"):
        open_tensors(tmp_path)


def test_empty_directory_has_no_weights(tmp_path):
    with pytest.raises(CheckpointError, match="no weights found"):
        open_tensors(tmp_path)


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2MiB") == 2 * 2**20
    assert parse_size("123") == 123
    with pytest.raises(CheckpointError, match="invalid size 'lots'"):
        parse_size("lots")


def test_unsupported_dtype_is_named(tmp_path):
    header = b'{"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}'
    header += b" " * (-len(header) % 8)
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: tensor 'w' has dtype C64, which gptx does not read"
    ):
        open_tensors(tmp_path)


def test_writer_does_not_keep_the_base_of_a_small_view(tmp_path):
    base = torch.arange(1000, dtype=torch.float32)
    with ShardedSafetensorsWriter(tmp_path, 10**6) as w:
        w.add("head", base[:10])
        assert w._shard[0][1].untyped_storage().nbytes() == 40
    assert torch.equal(open_tensors(tmp_path).get("head"), base[:10])
