"""`gptx convert checkpoint|config`: thin wrappers over gptx_cli.convert (imported inside the commands)."""

from __future__ import annotations

from pathlib import Path

import typer

from gptx_cli.commands.options import NoVerify
from gptx_cli.errors import UsageError

app = typer.Typer(
    help="Convert checkpoints and configs between Hugging Face and gptx / ModelZoo.", no_args_is_help=True
)


@app.command("checkpoint")
def convert_checkpoint_cmd(
    src: Path = typer.Argument(..., help="HF model directory (config.json + weights) or gptx checkpoint."),
    src_fmt: str = typer.Option(None, "--src-fmt", "--src_fmt", help="hf | gptx (default: detected)."),
    tgt_fmt: str = typer.Option(None, "--tgt-fmt", "--tgt_fmt", help="gptx | hf (default: the other one)."),
    model: str = typer.Option(
        None, "--model", help="gptj | gpt-neox (default: from config.json / gptx.json)."
    ),
    config: Path = typer.Option(
        None,
        "--config",
        help="HF source: its config.json; gptx source: a YAML whose model section describes it.",
    ),
    output_dir: Path = typer.Option(
        None, "--output-dir", "--output_dir", help="Where to write (default: <src>_to_<tgt-fmt>)."
    ),
    dtype: str = typer.Option(None, "--dtype", help="Cast floating tensors: float32 | bfloat16 | float16."),
    shard_size: str = typer.Option(
        "5GB", "--shard-size", "--shard_size", help="Max shard size, e.g. 5GB, 500MB."
    ),
    drop_unmatched_keys: bool = typer.Option(
        False,
        "--drop-unmatched-keys",
        "--drop_unmatched_keys",
        help="Skip source tensors the model does not use.",
    ),
    info: bool = typer.Option(
        False, "--info", help="Describe SRC (format, family, parameters, dtypes) and exit."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    no_verify: NoVerify = False,
) -> None:
    """Convert a checkpoint between Hugging Face (GPT-J / GPT-NeoX) and gptx, one tensor at a time.

    Example: gptx convert checkpoint ./gpt-j-6b --output-dir model_dir/checkpoint_0
    """
    from gptx_cli.checksum import skip_verification

    skip_verification(no_verify)
    if info:
        from gptx_cli.convert.info import checkpoint_info, format_info

        typer.echo(format_info(checkpoint_info(src)))
        return
    from gptx_cli.convert.weights_convert import convert_checkpoint, print_summary
    from gptx_cli.fsutil import check_output

    if output_dir is not None:
        check_output(output_dir, what="--output-dir", kind="dir")
    summary = convert_checkpoint(
        src,
        src_fmt=src_fmt,
        tgt_fmt=tgt_fmt,
        model=model,
        config=config,
        output_dir=output_dir,
        dtype=dtype,
        shard_size=shard_size,
        drop_unmatched_keys=drop_unmatched_keys,
        progress=not no_progress,
    )
    print_summary(summary)


@app.command("config")
def convert_config_cmd(
    src: Path = typer.Argument(..., help="config.json (or its directory), or a ModelZoo YAML."),
    src_fmt: str = typer.Option(..., "--src-fmt", "--src_fmt", help="hf | legacy | trainer."),
    tgt_fmt: str = typer.Option(..., "--tgt-fmt", "--tgt_fmt", help="trainer | legacy | hf."),
    output: Path = typer.Option(None, "--output", "-o", help="Output file (default: next to SRC)."),
    output_dir: Path = typer.Option(None, "--output-dir", "--output_dir", help="Output directory."),
    model: str = typer.Option(
        None, "--model", help="HF target family: gptj | gpt-neox (default: model.name)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Convert a config: HF config.json <-> ModelZoo model section, legacy <-> trainer layout.

    Example: gptx convert config params_gptj_6B_r2.3.1.yaml --src-fmt legacy --tgt-fmt trainer
    """
    from gptx_cli.convert.config import convert_config
    from gptx_cli.fsutil import check_output

    if output is not None and output_dir is not None:
        raise UsageError("give --output or --output-dir, not both")
    if output is not None:
        check_output(output, what="--output", kind="file")
    if output_dir is not None:
        check_output(output_dir, what="--output-dir", kind="dir")
    written, notes = convert_config(
        src,
        src_fmt=src_fmt,
        tgt_fmt=tgt_fmt,
        output=output,
        output_dir=output_dir,
        family=model,
        overwrite=overwrite,
    )
    for note in notes:
        typer.echo(f"warning: {note}", err=True)
    typer.echo(f"wrote {written}")
