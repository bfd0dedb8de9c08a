"""Counts and timings of one generation: ``model.last_stats`` after ``generate`` / ``chat``.

tests/test_generate.py checks the counts and the stop reason after ``generate`` and ``chat``;
tests/test_cli_generate.py and tests/test_first_hour.py check the printed summary (no "nan tok/s" for
zero new tokens).

next: loop.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GenerationStats:
    """Counts and timings of one generation (generator-internal time only, not the consumer's)."""
    prompt_tokens: int = 0
    prompt_seconds: float = 0.0
    generated_tokens: int = 0         # tokens sampled, a final stop token included
    generation_seconds: float = 0.0   # sampling + decode forward passes
    stop_reason: str | None = None    # max_new_tokens | context | stop_token | stop_string
    token_ids: list[int] = field(default_factory=list)   # the generated ids, the stop token excluded

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 else float("nan")

    @property
    def generated_tokens_per_s(self) -> float:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds > 0 else float("nan")

    def summary(self) -> str:
        def rate(tokens, per_s):
            return f"{tokens} tokens, {per_s:.1f} tok/s" if tokens and per_s == per_s else f"{tokens} tokens"
        return (f"prompt: {rate(self.prompt_tokens, self.prompt_tokens_per_s)} | generated: "
                f"{rate(self.generated_tokens, self.generated_tokens_per_s)} | stop: {self.stop_reason}")
