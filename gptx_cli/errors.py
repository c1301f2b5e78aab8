"""Errors are data: raise a GptxError where the problem is found; the CLI formats it once."""

from __future__ import annotations


class GptxError(Exception):
    """A user-facing problem: one-line message, optional hint, and the process exit code.

    Exit codes: 1 = the input is invalid or the job failed; 2 = usage error (bad flag, unreadable file).
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(GptxError):
    """Bad command-line usage or an unreadable input file (exit 2)."""

    exit_code = 2


class ConfigError(GptxError):
    """A config that cannot be loaded or is invalid (exit 1)."""


class DataError(GptxError):
    """Missing, empty or corrupt data (exit 1)."""


class CheckpointError(GptxError):
    """Missing, corrupt or mismatching checkpoint (exit 1)."""
