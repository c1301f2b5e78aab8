"""ModelZoo's `setup.mode: nlg` (nlg_token_generator.py with hooks.nlg_read_hook).

NLG data sets (E2E, DART, WebNLG) come already tokenized: each JSON line holds token-id lists under
`read_hook_kwargs.context_key` and `completion_key`. One sample per record, exactly as
NLGTokenGenerator.encode builds it: `input_ids = context + completion[:-1]`, `labels = context[1:] +
completion`, both zero-padded to max_seq_length (`np.pad`'s default), and the loss mask 1 on positions
`len(context) - 1 .. len(context) + len(completion) - 2` (the completion's tokens as labels). No
tokenizer runs. (ModelZoo's own encode ends in a NameError, `successful`, so its NLG mode cannot
complete; gptx writes what the function builds up to there.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from gptx_cli.errors import DataError, UsageError


def nlg_sample(context: list[int], completion: list[int], msl: int) -> np.ndarray:
    """[3, msl] int32: NLGTokenGenerator.encode's sample."""
    ctx, comp = np.asarray(context, dtype=np.int64), np.asarray(completion, dtype=np.int64)
    input_ids = np.concatenate((ctx, comp[:-1]))
    labels = np.concatenate((ctx[1:], comp))
    input_ids = np.pad(input_ids, (0, msl - len(input_ids)))
    labels = np.pad(labels, (0, msl - len(labels)))
    indices = np.arange(msl)
    mask = np.where(indices < len(ctx) - 1, 0, indices)
    mask = np.where(mask >= len(ctx) - 1 + len(comp), 0, mask)
    mask = np.where(mask != 0, 1, 0)
    return np.stack([input_ids, mask, labels]).astype(np.int32)


def _ids(value: Any, where: str, key: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise DataError(f"{where}: '{key}' must be a list of token ids (NLG data comes tokenized)")
    return value


def run_nlg(plan: Any, opts: Any) -> dict[str, Any]:
    from gptx_cli.data.hdf5 import write_sample_file
    from gptx_cli.data.preprocess import _remove_outputs
    from gptx_cli.data.sources import expand_inputs
    from gptx_cli.fsutil import write_json

    if not opts.output_dir:
        raise UsageError(f"{plan.file}: setup.output_dir is required")
    ckey, okey = plan.hook_kwargs["context_key"], plan.hook_kwargs["completion_key"]
    msl = opts.max_seq_length
    out = Path(opts.output_dir)
    if out.is_dir() and any(out.iterdir()):
        if not opts.overwrite:
            raise DataError(
                f"output directory {out} already exists and is not empty", hint="pass --overwrite"
            )
        _remove_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    samples: list[np.ndarray] = []
    k = 0
    records = loss_tokens = 0
    inputs = []
    for unit in expand_inputs(opts.inputs):
        if unit.kind != "jsonl":
            raise DataError(f"{unit.location}: NLG data must be JSON lines with {ckey} and {okey}")
        inputs.append(unit.location)
        with open(unit.location, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{unit.location}:{n}"
                try:
                    rec = json.loads(line)
                except ValueError:
                    raise DataError(f"{where}: malformed JSON") from None
                ctx = _ids(rec.get(ckey), where, ckey)
                comp = _ids(rec.get(okey), where, okey)
                if len(ctx) + len(comp) - 1 > msl:
                    raise DataError(
                        f"{where}: context + completion hold {len(ctx) + len(comp) - 1} tokens > {msl}"
                    )
                s = nlg_sample(ctx, comp, msl)
                loss_tokens += int(s[1].sum())
                records += 1
                samples.append(s)
                if len(samples) == opts.samples_per_file:
                    write_sample_file(out / f"data-00000-{k:04d}.h5", np.stack(samples))
                    samples, k = [], k + 1
    if samples:
        write_sample_file(out / f"data-00000-{k:04d}.h5", np.stack(samples))
    if opts.shuffle and records:  # ModelZoo shuffles the written files in every mode
        from gptx_cli.data.shuffle import shuffle_sample_files

        shuffle_sample_files(sorted(out.glob("data-*.h5")), opts.shuffle_seed)
    if not records:
        raise DataError(f"no records in {', '.join(inputs)}: the input is empty")
    params = {
        "setup": {"mode": "nlg", "input": inputs, "output_dir": str(out)},
        "processing": {"max_seq_length": msl, "context_key": ckey, "completion_key": okey, "pad_id": 0},
        "features": ["input_ids", "attention_mask", "labels"],
        "post-process": {
            "n_examples": records,
            "loss_valid_tokens": loss_tokens,
            "num_tokens": records * msl,
        },
    }
    write_json(out / "data_params.json", params, sort_keys=True)
    print(f"nlg: {records:,} samples -> {out}", file=sys.stderr)
    return {"nlg": params}
