"""`gptx validate-config`: schema + semantic checks of ModelZoo YAML configs, without importing torch."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def validate_config_cmd(
    configs: list[Path] = typer.Argument(
        None, help="YAML configs to check (default: every configs/*.yaml).", show_default=False
    ),
    output_format: str = typer.Option("text", "--format", help="text or json (one JSON document)."),
    summary: bool = typer.Option(
        False, "--summary", help="Also print parameter count, training FLOPs/token and a memory estimate."
    ),
    strict_paths: bool = typer.Option(
        False,
        "--strict-paths",
        "--strict_paths",
        help="Missing data_dir directories are errors, not warnings.",
    ),
    overrides: list[str] = typer.Option(
        [],
        "--set",
        "--override",
        help="Config override key.path=value (repeatable), e.g. model.hidden_size=64.",
    ),
) -> None:
    """Validate ModelZoo YAML configs (trainer or legacy layout): exit 0 all valid, 1 invalid, 2 usage error.

    Example: gptx validate-config configs/params_gptj_6B.yaml --summary
    """
    from gptx_cli.config import validate
    from gptx_cli.errors import UsageError

    if output_format not in ("text", "json"):
        raise UsageError(f"--format must be text or json, got {output_format!r}")
    paths = list(configs) if configs else validate.default_config_paths()
    reports = validate.validate_paths(paths, overrides, strict_paths=strict_paths, summary=summary)
    if output_format == "json":
        sys.stdout.write(validate.render_json(reports))
    else:
        out, err = validate.render_text(reports)
        sys.stdout.write(out)
        sys.stderr.write(err)
    raise typer.Exit(validate.exit_code(reports))
