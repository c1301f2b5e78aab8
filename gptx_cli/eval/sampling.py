"""What and how `gptx generate` samples: the sampling config and its rules (torch-free, so a wrong
combination of flags is answered before torch is imported)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gptx_cli.errors import UsageError


@dataclass
class SamplingConfig:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: Sequence[str] = ()
    eos_id: int | None = None  # generation ends after this token (None: only max_new_tokens / stop)

    @classmethod
    def from_flags(
        cls,
        *,
        max_new_tokens: int = 64,
        greedy: bool = False,
        sample: bool = False,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> SamplingConfig:
        """`gptx generate`'s sampling flags as one config: sampling is asked for by --sample, a
        temperature > 0, --top-k or --top-p; --greedy and temperature 0 mean argmax and combine with
        none of them. Checked here (torch-free), so a wrong combination is answered at once."""
        wants_sampling = (
            sample or (temperature is not None and temperature > 0) or top_k is not None or top_p is not None
        )
        if greedy and wants_sampling:
            raise UsageError(
                "--greedy cannot be combined with --sample, --temperature > 0, --top-k or --top-p"
            )
        if temperature is not None and temperature < 0:
            raise UsageError(f"--temperature must be >= 0, got {temperature}")
        if temperature == 0 and (sample or top_k is not None or top_p is not None):
            raise UsageError("--temperature 0 means greedy; it cannot be combined with sampling options")
        cfg = cls(
            max_new_tokens=max_new_tokens,
            do_sample=wants_sampling,
            temperature=temperature if temperature else 1.0,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            seed=seed,
            stop=tuple(stop),
        )
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature <= 0 and self.do_sample:
            raise UsageError("--temperature must be > 0 when sampling (use --greedy for argmax decoding)")
        if self.top_k is not None and self.top_k < 1:
            raise UsageError(f"--top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise UsageError(f"--repetition-penalty must be > 0, got {self.repetition_penalty}")
        if any(s == "" for s in self.stop):
            raise UsageError("a stop sequence cannot be empty")
