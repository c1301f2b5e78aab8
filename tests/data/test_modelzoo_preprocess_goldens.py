"""`gptx preprocess --config` against ModelZoo 2.10's own preprocessing (goldens in
tests/golden/modelzoo/preprocess/, made by make_goldens.py there with ModelZoo's `preprocess_data`).

Every case runs the same v2 YAML (cases/<case>/config.yaml, placeholders filled in) in a scratch
directory, once per test session, and is compared three ways:

- samples: every HDF5 dataset of every output directory, all files concatenated in order, byte for
  byte against ModelZoo's (dtype, shape and bytes);
- stats: every key ModelZoo writes under `post-process` in data_params.json, by value;
- params: every other key ModelZoo writes in data_params.json (`setup`, `processing`, `dataset`,
  `features`), by value.

Where gptx is known to differ today the comparison is marked xfail(strict=True) with the reason
(issue #25), so a fix shows up as an XPASS that fails the run until the mark is removed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from gptx_testing import REPO, built_once, run_gptx, shared_path

GOLDEN = REPO / "tests" / "golden" / "modelzoo" / "preprocess"
CASES = sorted(p.name for p in (GOLDEN / "cases").iterdir() if (p / "config.yaml").is_file())
CORPUS_PH, TOKENIZERS_PH = "@CORPUS@", "@TOKENIZERS@"

# (case, comparison) -> why gptx differs from ModelZoo there today (issue #25); "*": every comparison.
KNOWN: dict[tuple[str, str], str] = {
    ("shuffle_files", "samples"): (
        "shuffle over several files: ModelZoo's first pass draws each sample's file from "
        "ceil(input bytes / write_chunk_size KiB) files (data_preprocessor.py: total_output_files; "
        "default 1024 KiB, so any corpus over 1 MiB has several) and draws the leftover-prefix sample "
        "after np.random.seed(shuffle_seed) again (write_remaining_prefix); gptx shuffles over the files "
        "its unshuffled run wrote (samples_per_file: one here), ignores write_chunk_size (warned) and draws "
        "the prefix sample from the running stream (with 5 files that alone moves one sample)"
    ),
}
KNOWN[("read_chunk_size", "stats")] = (
    "data_params stats: ModelZoo counts 31 processed_files / successful_files for the 30 records, 3 of them "
    "cut into 8 documents (gptx: 35, one per document it tokenises): it leaves out the 4 records read "
    "before the first cut one (their read chunk) out of its file and text counts (383 characters, 385 "
    "bytes fewer raw_* / normalized_*), though its token counts and samples hold them"
)
for _case in ("vsl", "vsl_long", "vsl_read_chunks", "finetune_vsl", "finetune_vsl_chunks"):
    KNOWN[(_case, "stats")] = (
        "data_params stats (VSL): no num_sequences_before_packing / vsl_packing_factor, and the documents "
        "shorter than min_sequence_len are not counted as discarded_files"
    )


def _cases(comparison: str) -> list[Any]:
    out = []
    for case in CASES:
        why = KNOWN.get((case, comparison)) or KNOWN.get((case, "*"))
        marks = [pytest.mark.xfail(strict=True, reason=f"#25: {why}")] if why else []
        out.append(pytest.param(case, marks=marks, id=case))
    return out


@pytest.fixture(scope="session")
def tokenizers_dir() -> Path:
    return shared_path("assets", "tokenizers")


def gptx_output(case: str, tmp_path_factory: pytest.TempPathFactory, tokenizers: Path) -> Path:
    """The scratch dir where `gptx preprocess --config config.yaml` ran for `case`: run once per session,
    shared by the xdist workers (`built_once`)."""

    def build(work: Path) -> None:
        text = (GOLDEN / "cases" / case / "config.yaml").read_text()
        text = text.replace(CORPUS_PH, str(GOLDEN / "corpus")).replace(TOKENIZERS_PH, str(tokenizers))
        (work / "config.yaml").write_text(text)
        res = run_gptx("preprocess", "--config", "config.yaml", "--no-progress", cwd=work)
        result = {"returncode": res.returncode, "stderr": res.stderr[-4000:]}
        (work / "result.json").write_text(json.dumps(result))

    work = built_once(tmp_path_factory, f"modelzoo-preprocess-{case}", build)
    result = json.loads((work / "result.json").read_text())
    assert result["returncode"] == 0, f"gptx preprocess failed for {case}:\n{result['stderr']}"
    return work


def _placeholders(text: str, tokenizers: Path) -> str:
    return text.replace(str(GOLDEN / "corpus"), CORPUS_PH).replace(str(tokenizers), TOKENIZERS_PH)


def _leaves(data: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(data, dict) and data:
        out: dict[tuple[str, ...], Any] = {}
        for k, v in data.items():
            out |= _leaves(v, prefix + (k,))
        return out
    return {prefix: data}


def _gptx_samples(out: Path, dataset: str) -> np.ndarray | None:
    files = sorted(out.glob("*.h5"))
    parts = []
    for f in files:
        with h5py.File(f, "r") as h5:
            if dataset in h5:
                parts.append(h5[dataset][()])
    return np.concatenate(parts) if parts else None


def _first_difference(want: np.ndarray, got: np.ndarray) -> str:
    if want.shape[1:] != got.shape[1:]:
        return f"sample shape {got.shape[1:]}, ModelZoo's {want.shape[1:]}"
    n = min(len(want), len(got))
    differ = [i for i in range(n) if not np.array_equal(want[i], got[i])]
    head = f"{len(got)} samples, ModelZoo {len(want)}; {len(differ)} of the first {n} differ"
    if not differ:
        return head
    i = differ[0]
    rows = [r for r in range(want.shape[1]) if not np.array_equal(want[i, r], got[i, r])]
    r = rows[0]
    cols = np.flatnonzero(want[i, r] != got[i, r])
    c = int(cols[0])
    return (
        f"{head} (first: sample {i}, rows {rows}, row {r} from column {c}: "
        f"gptx {got[i, r, c : c + 8].tolist()} ModelZoo {want[i, r, c : c + 8].tolist()})"
    )


@pytest.mark.parametrize("case", _cases("samples"))
def test_samples_equal_modelzoos_byte_for_byte(case, tmp_path_factory, tokenizers_dir):
    work = gptx_output(case, tmp_path_factory, tokenizers_dir)
    golden = np.load(GOLDEN / "cases" / case / "samples.npz")
    assert golden.files, case
    problems = []
    for key in sorted(golden.files):
        rel, dataset = key.rsplit("/", 1)
        want = golden[key]
        got = _gptx_samples(work / rel, dataset)
        if got is None:
            problems.append(f"{key}: gptx wrote no dataset {dataset!r} in {rel}/")
        elif got.dtype != want.dtype:
            problems.append(f"{key}: dtype {got.dtype}, ModelZoo's {want.dtype}")
        elif got.shape != want.shape or got.tobytes() != want.tobytes():
            problems.append(f"{key}: {_first_difference(want, got)}")
    assert not problems, "\n".join(problems)


def _compare_params(case: str, work: Path, tokenizers: Path, stats: bool) -> None:
    problems = []
    for want_file in sorted((GOLDEN / "cases" / case).rglob("data_params.json")):
        rel = want_file.parent.relative_to(GOLDEN / "cases" / case)
        want = _leaves(json.loads(want_file.read_text()))
        got_file = work / rel / "data_params.json"
        if not got_file.is_file():
            problems.append(f"{rel}: gptx wrote no data_params.json")
            continue
        got = _leaves(json.loads(_placeholders(got_file.read_text(), tokenizers)))
        for path, value in sorted(want.items()):
            if (path[0] == "post-process") != stats:
                continue
            name = ".".join(path)
            if path not in got:
                problems.append(f"{rel}: {name}: missing (ModelZoo: {value!r})")
            elif got[path] != value:
                problems.append(f"{rel}: {name}: {got[path]!r}, ModelZoo {value!r}")
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems)


@pytest.mark.parametrize("case", _cases("stats"))
def test_data_params_stats_equal_modelzoos(case, tmp_path_factory, tokenizers_dir):
    _compare_params(case, gptx_output(case, tmp_path_factory, tokenizers_dir), tokenizers_dir, stats=True)


@pytest.mark.parametrize("case", _cases("params"))
def test_data_params_settings_equal_modelzoos(case, tmp_path_factory, tokenizers_dir):
    _compare_params(case, gptx_output(case, tmp_path_factory, tokenizers_dir), tokenizers_dir, stats=False)
