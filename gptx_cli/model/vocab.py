"""The one token-id range check: an id at or past the model's vocab_size would index past the embedding
(`IndexError: index out of range in self`), so every path that feeds ids to a model (eval data, task
requests, prompts) asks here first and gets one named error instead."""

from __future__ import annotations

from gptx_cli.errors import DataError, GptxError, UsageError

TOKENIZER_HINT = "use the tokenizer the model was trained with (--tokenizer)"


def check_token_ids(low: int, high: int, vocab_size: int, source: str, hint: str | None = None) -> None:
    """Refuse ids outside [0, vocab_size): `low` and `high` are the smallest and largest id seen. With a
    `hint` (the ids came from a tokenizer the user chose) it is a usage error (exit 2), else a data error."""
    if high >= vocab_size or low < 0:
        bad = high if high >= vocab_size else low
        error: type[GptxError] = UsageError if hint else DataError
        raise error(f"{source}: token id {bad} is outside the model's vocabulary of {vocab_size}", hint=hint)
