"""ModelZoo's `setup.data_splits` / `context_splits` (data_preparation/data_preprocessing/data_split.py).

Before tokenizing, every raw document is assigned to a data split (train / val / test, by
`split_fraction`) and, with context splits, to a sequence length (by `split_fractions` over
`MSL_List`, `1K` = 1024), with ModelZoo's random draws in ModelZoo's order: input files are dealt
round-robin to `processes` readers; reader `i` draws from `np.random.default_rng(split_seed + i)`, per
document `rng.integers(0, n_files_of_reader)` (the file whose name the document is saved under), then
`rng.choice(n_splits, p=fractions)`, then `rng.choice(n_msl, p=split_fractions)`. Documents are
written as JSON lines (`.jsonl.zst`) to `data_splits_dir/<split>/msl_<msl>/<dir>/<file_name>.jsonl.zst`
and each `(split, msl)` is preprocessed on its own into `output_dir/<split>/msl_<msl>` with
`max_seq_length` = msl.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from gptx_cli.data.finetune import check_record
from gptx_cli.errors import ConfigError, DataError


def normalize_msl(value: Any) -> int:
    """ModelZoo's normalize_msl: '2K' -> 2048, '0.5k' -> 512, 1024 -> 1024."""
    if isinstance(value, str):
        if re.search(r"k", value, flags=re.IGNORECASE):
            return int(float(re.sub(r"k", "", value, flags=re.IGNORECASE)) * 1024)
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"invalid msl {value!r}")
    return int(value)


def fractions(values: Any) -> Any:
    """ModelZoo's convert_fractions_or_floats: '1/3' or 0.2, and lists normalised to sum to 1."""
    if not isinstance(values, list):
        return float(Fraction(values)) if isinstance(values, str) and "/" in values else float(values)
    floats = [fractions(v) for v in values]
    total = sum(floats)
    return [f / total for f in floats]


DEFAULT_SPLITS_DIR = "data_splits_dir"  # under output_dir, where setup.data_splits_dir is not given


def _check_fraction(value: Any, what: str) -> None:
    f = fractions(value)
    if not 0 <= f <= 1:
        raise ConfigError(f"{what} {value} is outside [0, 1]")


def plan_splits(
    data_splits: dict[str, Any] | None, shared: dict[str, Any] | None
) -> list[tuple[str | None, Any]]:
    """(split name or None, msl or None) for every output, as DataSplit.prepare_splits orders them."""
    out: list[tuple[str | None, Any]] = []
    if data_splits:
        for name, value in data_splits.items():
            _check_fraction(value.get("split_fraction", 0), f"the split_fraction of '{name}'")
        total = sum(fractions(v.get("split_fraction", 0)) for v in data_splits.values())
        if not math.isclose(total, 1.0):
            raise ConfigError("setup.data_splits: the split_fraction values must add up to 1")
        for name, value in data_splits.items():
            cs = value.get("context_splits")
            if cs:
                out += [(name, m) for m in _msl_list(cs)]
            elif not shared:
                out.append((name, None))
        if shared and any(v.get("context_splits") for v in data_splits.values()):
            raise ConfigError("give context_splits under each data split or once in setup, not both")
    if shared:
        msls = _msl_list(shared)
        names: list[str | None] = list(data_splits) if data_splits else [None]
        out += [(n, m) for n in names for m in msls]
    return out


def _msl_list(cs: dict[str, Any]) -> list[Any]:
    msl, fr = cs.get("MSL_List"), cs.get("split_fractions")
    if not msl or fr is None or len(fr) != len(msl):
        raise ConfigError("a context split needs MSL_List and as many split_fractions")
    for m, f in zip(msl, fr, strict=True):
        _check_fraction(f, f"the split_fractions entry for msl {m}")
    if len({normalize_msl(m) for m in msl}) != len(msl):
        raise ConfigError("MSL_List holds duplicate entries")
    return list(msl)


def assign(
    n_docs_per_file: list[int],
    files: list[str],
    processes: int,
    split_seed: int,
    data_splits: dict[str, Any] | None,
    shared: dict[str, Any] | None,
) -> Iterator[tuple[int, int, str, str | None, Any]]:
    """(file index, document index, file named in the output, split name, msl) for every document."""
    names = list(data_splits or {})
    per_split_cs = [(data_splits or {})[n].get("context_splits") or shared for n in names]
    for p in range(processes):
        mine = [i for i in range(len(files)) if i % processes == p]
        rng = np.random.default_rng(split_seed + p)
        for i in mine:
            for d in range(n_docs_per_file[i]):
                named = files[mine[int(rng.integers(0, len(mine)))]]
                split: str | None = None
                cs = shared
                if data_splits:
                    probs = fractions([data_splits[n].get("split_fraction") for n in names])
                    k = int(rng.choice(np.arange(len(names)), p=probs))
                    split, cs = names[k], per_split_cs[k]
                msl = None
                if cs:
                    sf = fractions(cs["split_fractions"])
                    msl = cs["MSL_List"][int(rng.choice(np.arange(len(sf)), p=sf))]
                yield i, d, named, split, msl


def _documents(unit: Any, text_key: str, spec: Any = None) -> list[dict[str, Any]]:
    """The raw documents of one input file as ModelZoo's splitter reads them ({text_key: value}, or
    the read hook's data keys in finetuning mode: a record the read hook cannot read is an error naming
    this file and line, not the split file it would be written to)."""
    keys = spec.columns() if spec is not None else None
    from gptx_cli.data.sources import iter_record_batches

    docs: list[dict[str, Any]] = []
    for batch in iter_record_batches(unit, 0, text_key=text_key, columns=keys):
        for offset, rec in enumerate(batch.records):
            if unit.kind == "jsonl":
                if not rec.strip():
                    continue
                try:
                    obj = json.loads(rec)
                except ValueError:
                    raise DataError(f"{unit.location}:{batch.first_line + offset}: malformed JSON") from None
                if keys:  # finetuning: the records as they are
                    check_record(obj, spec, f"{unit.location}:{batch.first_line + offset}")
                    docs.append({k: obj[k] for k in keys if k in obj})
                else:
                    docs.append({text_key: obj.get(text_key) if isinstance(obj, dict) else None})
            elif unit.kind == "text":
                text = rec.decode("utf-8", errors="replace") if isinstance(rec, bytes) else rec
                docs += [{text_key: line} for line in text.splitlines()]
            else:
                if keys:
                    check_record(rec, spec, f"{unit.location}:{batch.first_line + offset}")
                docs.append(rec if keys else {text_key: rec})
    return docs


def run_splits(plan: Any, opts: Any) -> dict[str, Any]:
    """Split the documents, then preprocess every (split, msl) into its own directory."""
    import zstandard

    from gptx_cli.data.preprocess import modelzoo_split_params, run_preprocess
    from gptx_cli.data.sources import expand_inputs
    from gptx_cli.fsutil import write_bytes

    if not opts.output_dir:
        raise ConfigError(f"{plan.file}: setup.output_dir is required with data_splits")
    try:
        outputs = plan_splits(plan.data_splits, plan.context_splits)
    except ConfigError as err:
        raise plan.doc.error(
            ("setup", "data_splits" if plan.data_splits else "context_splits"), err.message
        ) from None
    except (ValueError, TypeError, ZeroDivisionError, AttributeError) as err:
        raise plan.doc.error(("setup", "data_splits"), f"malformed split ({err})") from None
    units = expand_inputs(opts.inputs)
    source_root = Path(opts.inputs[0]) if len(opts.inputs) == 1 and Path(opts.inputs[0]).is_dir() else None
    # ModelZoo's default, <parent of output_dir>/data_splits_dir, is shared by every output under one
    # parent (a second run's --overwrite would delete the first's): each output gets its own.
    splits_dir = Path(plan.data_splits_dir or os.path.join(opts.output_dir, DEFAULT_SPLITS_DIR))
    if splits_dir.is_dir() and any(splits_dir.iterdir()):
        if not opts.overwrite:
            raise DataError(
                f"data_splits_dir {splits_dir} already exists and is not empty",
                hint="pass --overwrite to replace it",
            )
        shutil.rmtree(splits_dir)
    docs = [_documents(u, opts.text_key, getattr(opts, "finetuning", None)) for u in units]
    files = [u.location for u in units]
    buckets: dict[Path, list[dict[str, Any]]] = {}
    for i, d, named, split, msl in assign(
        [len(x) for x in docs],
        files,
        max(1, opts.processes),
        plan.split_seed,
        plan.data_splits,
        plan.context_splits,
    ):
        rel_dir = os.path.relpath(os.path.dirname(named), source_root) if source_root else "."
        doc_path = os.path.normpath(os.path.join(rel_dir, os.path.basename(named).replace(".", "_")))
        where = splits_dir
        if split is not None:
            where = where / split
        if msl is not None:
            where = where / f"msl_{msl}"
        buckets.setdefault(where / f"{doc_path}.jsonl.zst", []).append(docs[i][d])
    for path, bucket in buckets.items():
        data = b"".join(json.dumps(doc).encode("utf-8") + b"\n" for doc in bucket)
        write_bytes(path, zstandard.ZstdCompressor(level=3).compress(data))
    results: dict[str, Any] = {}
    for split, msl in outputs:
        src, out = splits_dir, Path(opts.output_dir)
        if split is not None:
            src, out = src / split, out / split
        if msl is not None:
            src, out = src / f"msl_{msl}", out / f"msl_{msl}"
        if not src.is_dir():
            raise DataError(f"no document fell into {src} (too few documents for the split fractions)")
        rel = os.path.relpath(out, opts.output_dir)
        sub = replace(
            opts,
            inputs=[str(src)],
            output_dir=str(out),
            modelzoo_params=modelzoo_split_params(getattr(opts, "modelzoo_params", None), rel),
        )
        if msl is not None:
            sub = replace(sub, max_seq_length=normalize_msl(msl))
        results[str(out)] = run_preprocess(sub)
    return results
