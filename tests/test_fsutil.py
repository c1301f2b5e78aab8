"""gptx_cli.fsutil: outputs appear complete or not at all, under one temporary-name convention."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gptx_cli import fsutil


def test_write_text_and_json_replace_the_file_and_leave_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    fsutil.write_text(target, "old\n")
    fsutil.write_json(target, {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert target.read_text().endswith("\n")
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    fsutil.write_bytes(target, b"old")
    with pytest.raises(RuntimeError), fsutil.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_temp_names_are_hidden_next_to_the_target_and_recognised(tmp_path: Path) -> None:
    tmp = fsutil.temp_path(tmp_path / "checkpoint_5")
    assert tmp.parent == tmp_path
    assert tmp.name == f".checkpoint_5.tmp-{os.getpid()}"
    assert fsutil.is_temp(tmp) and fsutil.is_temp("checkpoint_5.tmp-123")
    assert not fsutil.is_temp(tmp_path / "checkpoint_5")


def test_atomic_dir_replaces_an_existing_directory_whole(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with fsutil.atomic_dir(target) as d:
        (d / "a").write_text("1")
        (d / "b").write_text("1")
    with fsutil.atomic_dir(target) as d:
        (d / "a").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert (target / "a").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_atomic_dir_failure_leaves_the_previous_directory(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with fsutil.atomic_dir(target) as d:
        (d / "a").write_text("1")
    with pytest.raises(KeyboardInterrupt), fsutil.atomic_dir(target) as d:
        (d / "a").write_text("2")
        raise KeyboardInterrupt
    assert (target / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
