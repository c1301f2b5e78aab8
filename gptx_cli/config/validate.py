"""Config validation: JSON Schema (schemas/*.json) for shape, then semantic rules. Torch-free."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`" (did you mean 'hidden_size'?)"` for the closest candidate, or "" when nothing is close."""
    match = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
