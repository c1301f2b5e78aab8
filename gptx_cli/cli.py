"""The `gptx` command line: parse arguments, call one library function, map GptxError to an exit code.

Each subcommand lives in `gptx_cli/commands/<name>.py`; heavy libraries (torch, h5py, tokenizers) are
imported inside the command functions, never at module level, so `gptx --help` and
`gptx validate-config` stay fast and torch-free.
"""

from __future__ import annotations

import os
import sys

import typer

from gptx_cli import __version__
from gptx_cli.commands import (
    convert,
    evaluate,
    generate,
    inspect,
    lm_eval,
    preprocess,
    report,
    train,
    validate_config,
)
from gptx_cli.errors import GptxError

app = typer.Typer(
    name="gptx",
    help="Train, evaluate and convert GPT-J and GPT-NeoX models from Cerebras ModelZoo configs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": os.environ.get("GPTX_DEBUG", "") not in ("", "0")}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gptx {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """gptx: ModelZoo-compatible GPT-J / GPT-NeoX toolkit on plain PyTorch."""
    if debug:
        _state["debug"] = True


app.command("validate-config")(validate_config.validate_config_cmd)
app.command("preprocess")(preprocess.preprocess_cmd)
app.command("train")(train.train_cmd)
app.command("continue-pretrain")(train.continue_pretrain_cmd)
app.command("eval")(evaluate.eval_cmd)
app.command("generate")(generate.generate_cmd)
app.command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    lm_eval.lm_eval_cmd
)
app.command("report")(report.report_cmd)
app.command("inspect")(inspect.inspect_cmd)
app.add_typer(convert.app, name="convert")


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _global_flags(argv: list[str]) -> list[str]:
    """--debug is accepted anywhere before `--` (also after the subcommand); it reaches --nproc ranks
    through GPTX_DEBUG. --help that is not on a terminal gets a wide layout, so no option name is cut."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[:end]:
        _state["debug"] = True
        os.environ["GPTX_DEBUG"] = "1"
        argv = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    if ("--help" in argv[:end] or "-h" in argv[:end]) and not sys.stdout.isatty():
        if not os.environ.get("COLUMNS", "").strip():
            os.environ["COLUMNS"] = "200"
    return argv


def main() -> None:
    from gptx_cli.stdio import protect_stdout

    protect_stdout()
    sys.argv[1:] = _global_flags(sys.argv[1:])
    from gptx_cli.commands.options import install_number_checks

    try:
        install_number_checks(typer.main.get_command(app))(prog_name="gptx")
    except GptxError as err:
        if _state["debug"]:
            raise
        _fail(str(err), err.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as err:  # an unexpected bug: one line unless --debug
        if _state["debug"]:
            raise
        _fail(f"internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", 1)


if __name__ == "__main__":
    main()
