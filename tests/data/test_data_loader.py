"""The loader: ranks together see exactly the single-process global batch; resume from a sample index is
exact; shuffle, drop_last, data_subset, num_samples, mixture, workers; clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gptx_cli.config.spec import DataSpec
from gptx_cli.data.hdf5 import mark_complete, write_sample_file
from gptx_cli.data.loader import build_dataloader
from gptx_cli.errors import DataError

MSL = 8


def make_dir(d: Path, sizes: list[int], offset: int = 0) -> str:
    """HDF5 sample files whose sample i (counting across files) has input_ids all equal to offset + i."""
    d.mkdir(parents=True)
    start = offset
    for f, n in enumerate(sizes):
        ids = np.repeat(np.arange(start, start + n, dtype=np.int32)[:, None], MSL, axis=1)
        write_sample_file(d / f"data-{f:05d}-0000.h5", np.stack([ids, np.ones_like(ids), ids + 1], axis=1))
        start += n
    mark_complete(d)
    return str(d)


def ids_of(batches) -> list[list[int]]:
    return [b["input_ids"][:, 0].tolist() for b in batches]


def take(loader, n: int) -> list[list[int]]:
    it = iter(loader)
    return ids_of(next(it) for _ in range(n))


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    return make_dir(tmp_path / "d", [7, 6, 9])  # 22 samples over 3 files


def test_batches_are_int64_tensors_of_the_per_rank_shape(data_dir):
    batch = next(iter(build_dataloader(DataSpec(data_dir=[data_dir], batch_size=4), rank=1, world_size=2)))
    assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
    for v in batch.values():
        assert (
            v.dtype.is_floating_point is False
            and str(v.dtype) == "torch.int64"
            and tuple(v.shape) == (2, MSL)
        )
    assert (batch["labels"] == batch["input_ids"] + 1).all()


def test_two_ranks_together_see_the_single_process_batches_across_epochs(data_dir):
    spec = DataSpec(data_dir=[data_dir], batch_size=6, shuffle=True, shuffle_seed=11)
    single = take(build_dataloader(spec), 9)  # 54 samples: more than two epochs of 18
    ranks = [take(build_dataloader(spec, rank=r, world_size=2), 9) for r in range(2)]
    assert [a + b for a, b in zip(ranks[0], ranks[1], strict=True)] == single


def test_resume_from_position_continues_exactly(data_dir):
    spec = DataSpec(data_dir=[data_dir], batch_size=4, shuffle=True, shuffle_seed=3)
    loader = build_dataloader(spec)
    it = iter(loader)
    first = ids_of(next(it) for _ in range(5))
    assert loader.position == 20
    rest = take(build_dataloader(spec, start_sample=loader.position), 4)
    assert first + rest == take(build_dataloader(spec), 9)


def test_shuffle_is_a_seeded_permutation_per_epoch_and_drop_last_trims_it(data_dir):
    spec = DataSpec(data_dir=[data_dir], batch_size=4, shuffle=True, shuffle_seed=5, drop_last=True)
    loader = build_dataloader(spec)
    assert loader.samples_per_epoch == 20  # 22 samples, remainder of a global batch dropped
    epochs = take(loader, 10)
    e0, e1 = sum(epochs[:5], []), sum(epochs[5:], [])
    assert len(set(e0)) == 20 and len(set(e1)) == 20 and e0 != e1 and e0 != sorted(e0)
    assert take(build_dataloader(spec), 10) == epochs
    other = DataSpec(data_dir=[data_dir], batch_size=4, shuffle=True, shuffle_seed=6)
    assert take(build_dataloader(other), 5) != epochs[:5]


def test_unshuffled_order_follows_files_and_eval_pass_keeps_the_short_batch(data_dir):
    spec = DataSpec(data_dir=[data_dir], batch_size=8, drop_last=False)
    loader = build_dataloader(spec, infinite=False)
    assert len(loader) == 3
    assert sum(ids_of(loader), []) == list(range(22))
    assert loader.position == 22


def test_data_subset_and_num_samples(data_dir):
    half = build_dataloader(
        DataSpec(data_dir=[data_dir], batch_size=11, data_subset="0.5-1.0"), infinite=False
    )
    assert sum(ids_of(half), []) == list(range(11, 22))
    capped = build_dataloader(DataSpec(data_dir=[data_dir], batch_size=5, num_samples=10), infinite=False)
    assert sum(ids_of(capped), []) == list(range(10))


def test_mixture_follows_weights_and_resumes(tmp_path):
    a = make_dir(tmp_path / "a", [40])
    b = make_dir(tmp_path / "b", [40], offset=1000)
    spec = DataSpec(
        mixture=[{"data_dir": a, "weight": 3}, {"data_dir": b, "weight": 1}], batch_size=8, shuffle=True
    )
    seen = sum(take(build_dataloader(spec), 128), [])  # one block of 1024 slots
    assert sum(x >= 1000 for x in seen) == 256
    loader = build_dataloader(spec)
    it = iter(loader)
    for _ in range(3):
        next(it)
    assert take(build_dataloader(spec, start_sample=loader.position), 2) == [seen[24:32], seen[32:40]]


def test_worker_processes_give_the_same_batches(data_dir):
    spec = DataSpec(data_dir=[data_dir], batch_size=4, shuffle=True, num_workers=2, prefetch_factor=2)
    assert take(build_dataloader(spec), 6) == take(
        build_dataloader(DataSpec(data_dir=[data_dir], batch_size=4, shuffle=True)), 6
    )


def test_missing_or_empty_data_dir_names_it_and_suggests_preprocess(tmp_path):
    pile = tmp_path / "language/datasets/pile_original/hdf5_dataset/train_shuffled_msl2048/0"
    with pytest.raises(DataError, match="does not exist") as err:
        build_dataloader(DataSpec(data_dir=[str(pile)]))
    assert str(pile) in str(err.value) and "gptx preprocess --dataset pile" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no .h5") as err:
        build_dataloader(DataSpec(data_dir=[str(tmp_path / "empty")]))
    assert "gptx preprocess" in str(err.value)


def test_config_mismatches_are_errors(data_dir):
    with pytest.raises(DataError, match="max_sequence_length is 16 but .* length 8"):
        build_dataloader(DataSpec(data_dir=[data_dir], max_sequence_length=16))
    with pytest.raises(DataError, match="divide evenly over 4 ranks"):
        build_dataloader(DataSpec(data_dir=[data_dir], batch_size=6), world_size=4)
    with pytest.raises(DataError, match="fewer than one global batch"):
        build_dataloader(DataSpec(data_dir=[data_dir], batch_size=64))
