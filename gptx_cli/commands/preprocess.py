"""`gptx preprocess`: tokenize and pack corpora into ModelZoo HDF5 (see docs/preprocess.md)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from gptx_cli.commands.options import fields_of


def preprocess_cmd(
    input: list[str] = typer.Option(
        None,
        "--input",
        "-i",
        help="Input file, directory, glob, datasets save_to_disk dir or hub name (repeatable).",
    ),
    output_dir: str = typer.Option(
        None, "--output-dir", "--output_dir", "-o", help="Where to write the files."
    ),
    dataset: str = typer.Option(
        None,
        "--dataset",
        help="A recipe: 'pile' (knows the Pile's layout and paths), 'trc2' (ModelZoo's TRC2 recipe: --input "
        "TRC2-headlines-docs-TRECBLOG.v2) or 'python-docs' (the built-in corpus: the Python standard "
        "library's documentation, split into train/ and val/).",
    ),
    input_dir: str = typer.Option(
        None, "--input-dir", "--input_dir", help="The Pile's directory (--dataset pile)."
    ),
    splits: str = typer.Option(
        None, "--splits", help="Pile splits to write, comma separated (default train,val)."
    ),
    pile_subsets: str = typer.Option(
        None,
        "--pile-subsets",
        "--pile_subsets",
        help="Keep only these meta.pile_set_name values (comma separated).",
    ),
    config: str = typer.Option(
        None, "--config", help="A ModelZoo v2 preprocessing YAML (setup/processing/dataset)."
    ),
    tokenizer: str = typer.Option(
        None, "--tokenizer", help="Preset (gpt2, neox-20b), tokenizer.json, or a directory."
    ),
    tokenizer_dir: str = typer.Option(
        None,
        "--tokenizer-dir",
        "--tokenizer_dir",
        help="Where presets live (else $GPTX_TOKENIZER_DIR, else the hub).",
    ),
    tokenizer_backend: str = typer.Option(
        "auto",
        "--tokenizer-backend",
        "--tokenizer_backend",
        help="auto | tokenizers | tiktoken (same ids; speed).",
    ),
    train_tokenizer: int = typer.Option(
        None,
        "--train-tokenizer",
        "--train_tokenizer",
        help="Train a byte-level BPE of this vocab size on the input.",
    ),
    text_key: str = typer.Option(
        None, "--text-key", "--text_key", help="JSON / column key holding the text."
    ),
    split: str = typer.Option(
        None, "--split", help="Split of a datasets directory or hub dataset (default train)."
    ),
    max_seq_length: int = typer.Option(
        None, "--max-seq-length", "--max_seq_length", help="Sample length (2048)."
    ),
    pack_sequences: bool = typer.Option(
        None,
        "--pack-sequences/--no-pack-sequences",
        help="Concatenate documents before cutting (default on; pretraining only: fine-tuning packs with --use-vsl).",
    ),
    min_sequence_len: int = typer.Option(
        None, "--min-sequence-len", "--min_sequence_len", help="Drop shorter final chunks (10)."
    ),
    output_format: str = typer.Option(
        "hdf5", "--output-format", "--output_format", help="hdf5 | corpus | mmidx."
    ),
    use_vsl: bool = typer.Option(
        False,
        "--use-vsl",
        "--use_vsl",
        help="ModelZoo VSL samples [n, 5, msl] (adds attention_span, position_ids): several documents (or "
        "fine-tuning examples) per sample, each token attending only within its own.",
    ),
    samples_per_file: int = typer.Option(
        None, "--samples-per-file", "--files_per_record", help="Samples per HDF5 file (5000)."
    ),
    processes: int = typer.Option(None, "--processes", "--num_processes", "-p", help="Worker processes (1)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the Pile train shuffle (0)."),
    shard_mb: float = typer.Option(256.0, "--shard-mb", help="Input MB per resumable unit of work."),
    strict: bool = typer.Option(
        False, "--strict", help="Fail on the first malformed record instead of skipping."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Finish an interrupted run in the same output directory."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
    progress: bool = typer.Option(
        None, "--progress/--no-progress", help="Live progress bar (default: on a terminal)."
    ),
    mode: str = typer.Option(
        None, "--mode", help="pretraining (default) or finetuning (prompt/completion or chat records)."
    ),
    prompt_key: str = typer.Option(
        None, "--prompt-key", "--prompt_key", help="Finetuning: the record key holding the prompt."
    ),
    completion_key: str = typer.Option(
        None, "--completion-key", "--completion_key", help="Finetuning: the key holding the completion."
    ),
    chat_key: str = typer.Option(
        None,
        "--chat-key",
        "--multi_turn_key",
        help="Finetuning chat: the key holding the list of {role, content} turns.",
    ),
    data_splits: str = typer.Option(
        None,
        "--data-splits",
        help="Finetuning: split the records, e.g. train=0.9,val=0.1 (output_dir/<name>; seeded by --seed).",
    ),
    keep_whole_last_character: bool = typer.Option(
        False,
        "--keep-whole-last-character",
        help="ModelZoo v2 pretraining (--config) and finetuning: keep every token of a document's (a "
        "region's) last character where ModelZoo's find_token_range drops all but the first "
        "(processing.gptx_keep_whole_last_character; docs/modelzoo-differences.md).",
    ),
    buffer_len: int = typer.Option(
        None, "--buffer-len", "--buffer_len", help="--dataset trc2: lines per split file (10000)."
    ),
    val_split_ratio: float = typer.Option(
        None,
        "--val-split-ratio",
        "--val_split_ratio",
        help="--dataset trc2: fraction of the split files for eval (0.1).",
    ),
) -> None:
    """Tokenize and pack corpora into ModelZoo HDF5 (or corpus files, or Megatron .bin/.idx).

    Example: gptx preprocess --dataset pile --input-dir /data/pile --tokenizer gpt2 --processes 16
    """
    from gptx_cli.data.preprocess import PreprocessOptions, recipe_defaults, run_preprocess
    from gptx_cli.errors import UsageError

    if tokenizer and train_tokenizer is not None:
        raise UsageError(
            "--tokenizer and --train-tokenizer exclude each other: --train-tokenizer trains the tokenizer "
            "it uses (output_dir/tokenizer.json)"
        )
    if (buffer_len is not None or val_split_ratio is not None) and dataset != "trc2":
        raise UsageError("--buffer-len and --val-split-ratio go with --dataset trc2")
    if output_dir:
        from gptx_cli.fsutil import check_output

        check_output(output_dir, what="--output-dir", kind="dir")
    given = fields_of(
        PreprocessOptions,
        locals(),
        inputs=list(input) if input else None,
        pile_splits=[s.strip() for s in splits.split(",") if s.strip()] if splits else None,
        pile_subsets=[s.strip() for s in pile_subsets.split(",") if s.strip()] if pile_subsets else None,
        use_vsl=use_vsl or None,
        strict=strict or None,
        resume=resume or None,
        overwrite=overwrite or None,
        keep_whole_last_character=keep_whole_last_character or None,
        mode=None,  # finetuning flags: options_from_flags below
    )
    given = {k: v for k, v in given.items() if v is not None}  # flags left out keep the recipe's defaults
    if mode or prompt_key or completion_key or chat_key or data_splits:
        from gptx_cli.data.finetune import options_from_flags

        options_from_flags(given, mode, prompt_key, completion_key, chat_key, data_splits)
    if config:
        from gptx_cli.data.v2config import load_v2_config, resolve_special_ids, run_v2

        plan = load_v2_config(config)
        for warning in plan.warnings:
            print(warning.format(), file=sys.stderr)
        resolve_special_ids(plan, tokenizer_dir)
        _interruptible(run_v2, plan, given)
        return
    if given.get("mode") == "finetuning":
        from gptx_cli.data.finetune import run_from_flags

        _interruptible(run_from_flags, given)
        return
    _interruptible(run_preprocess, PreprocessOptions(**{**recipe_defaults(dataset), **given}))


def _interruptible(run: Any, *args: Any) -> None:
    """Ctrl-C names the way to finish the run instead of a bare exit 130."""
    try:
        run(*args)
    except KeyboardInterrupt:
        from gptx_cli.errors import GptxError

        raise GptxError(
            "interrupted: the output is incomplete (no data_params.json yet)",
            hint="re-run the same command with --resume to finish it",
            exit_code=130,
        ) from None
