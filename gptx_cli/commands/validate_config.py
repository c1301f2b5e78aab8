"""`gptx validate-config`: schema + semantic checks of ModelZoo YAML configs, without importing torch."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from gptx_cli.commands.options import Overrides
from gptx_cli.config.validate import ValidationResult, validate_file
from gptx_cli.errors import UsageError
from gptx_cli.model.counts import run_summary


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
    overrides: Overrides = None,
) -> None:
    """Validate ModelZoo YAML configs (trainer or legacy layout): exit 0 all valid, 1 invalid, 2 usage error.

    Example: gptx validate-config configs/params_gptj_6B.yaml --summary
    """
    if output_format not in ("text", "json"):
        raise UsageError(f"--format must be text or json, got {output_format!r}")
    paths = list(configs) if configs else default_config_paths()
    reports = validate_paths(paths, overrides or (), strict_paths=strict_paths, summary=summary)
    if output_format == "json":
        sys.stdout.write(render_json(reports))
    else:
        out, err = render_text(reports)
        sys.stdout.write(out)
        sys.stderr.write(err)
    raise typer.Exit(exit_code(reports))


@dataclass
class FileReport:
    """One file's outcome for validate-config: a ValidationResult, or why the file could not be read."""

    file: str
    result: ValidationResult | None = None
    unreadable: str | None = None  # the UsageError message (exit 2)
    summaries: list[dict[str, Any]] = field(default_factory=list)


def default_config_paths(root: Path | None = None) -> list[Path]:
    """Every `*.yaml` under ./configs (what `gptx validate-config` checks without arguments)."""
    configs = root / "configs" if root is not None else Path("configs")
    paths = sorted(configs.glob("*.yaml"))
    if not paths:
        raise UsageError(f"no config given and no *.yaml in {configs}")
    return paths


def validate_paths(
    paths: Iterable[str | Path],
    overrides: Iterable[str] = (),
    *,
    strict_paths: bool = False,
    summary: bool = False,
) -> list[FileReport]:
    """validate-config's work: every file, with summaries (parameter counts etc.) on request."""
    overrides = list(overrides)
    reports = []
    for path in paths:
        report = FileReport(str(path))
        try:
            report.result = validate_file(path, overrides, strict_paths=strict_paths)
        except UsageError as err:
            report.unreadable = err.message
        else:
            if summary and report.result.valid:
                report.summaries = [run_summary(spec) for spec in report.result.specs]
        reports.append(report)
    return reports


def exit_code(reports: list[FileReport]) -> int:
    """0 all valid, 1 any invalid, 2 any unreadable."""
    if any(r.unreadable for r in reports):
        return 2
    return 0 if all(r.result is not None and r.result.valid for r in reports) else 1


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"


def render_text(reports: list[FileReport]) -> tuple[str, str]:
    """(stdout, stderr) text: problems as `file:line:col: key.path: message`, then a summary line."""
    out: list[str] = []
    err: list[str] = []
    n_err = n_warn = 0
    for r in reports:
        if r.unreadable:
            err.append(f"error: {r.unreadable}")
            continue
        assert r.result is not None
        for p in r.result.errors:
            out.append(p.format())
        for p in r.result.warnings:
            out.append(p.format_warning())
        for note in r.result.notes:
            out.append(f"{r.file}: note: {note}")
        n_err += len(r.result.errors)
        n_warn += len(r.result.warnings)
        status = "ok" if r.result.valid else f"invalid ({len(r.result.errors)} error(s))"
        out.append(f"{r.file}: {status}")
        for s in r.summaries:
            mem = s["memory"]
            b = mem["bytes"]
            out.append(
                f"  model {s['model']}"
                + (f" ({s['architecture']} architecture)" if s["architecture"] != s["model"] else "")
                + f": {s['parameters']:,} parameters; "
                f"{s['flops_per_token']:,} training FLOPs/token at seq_len {s['seq_len']}"
            )
            if s.get("lora"):
                share = 100 * s["trainable_parameters"] / max(1, s["parameters"])
                out.append(
                    f"  trainable: {s['trainable_parameters']:,} LoRA adapter parameters ({share:.3f}%); "
                    "the base is frozen"
                )
            out.append(
                f"  memory per process (micro-batch {mem['micro_batch_size']}, {mem['precision']}, "
                f"{mem['optimizer']}{', activation checkpointing' if mem['activation_checkpointing'] else ''}): "
                f"weights {_gib(b['weights'])}, grads {_gib(b['grads'])}, "
                f"optimizer state {_gib(b['optimizer_state'])}, activations {_gib(b['activations'])}, "
                f"total {_gib(b['total'])}"
            )
    valid = sum(1 for r in reports if r.result is not None and r.result.valid)
    invalid = sum(1 for r in reports if r.result is not None and not r.result.valid)
    unreadable = sum(1 for r in reports if r.unreadable)
    line = f"{len(reports)} config(s): {valid} valid, {invalid} invalid"
    if unreadable:
        line += f", {unreadable} unreadable"
    line += f"; {n_err} error(s), {n_warn} warning(s)"
    out.append(line)
    return "\n".join(out) + "\n", ("\n".join(err) + "\n") if err else ""


def render_json(reports: list[FileReport]) -> str:
    """One JSON document for pipelines: per file valid, errors, warnings, notes (and summaries)."""
    files = []
    for r in reports:
        if r.unreadable:
            files.append(
                {"file": r.file, "valid": False, "readable": False, "errors": [{"message": r.unreadable}]}
            )
            continue
        assert r.result is not None
        entry: dict[str, Any] = {
            "file": r.file,
            "valid": r.result.valid,
            "readable": True,
            "errors": [p.to_dict() for p in r.result.errors],
            "warnings": [p.to_dict() for p in r.result.warnings],
            "notes": list(r.result.notes),
        }
        if r.summaries:
            entry["summary"] = r.summaries
        files.append(entry)
    doc = {"valid": exit_code(reports) == 0, "exit_code": exit_code(reports), "files": files}
    return json.dumps(doc, indent=2) + "\n"
