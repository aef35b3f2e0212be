"""Retry policies: which failed attempts run again, and after how long (pure functions).

A policy is ``{"constant": {"attempts": N, "seconds": S}}`` or
``{"exponential": {"attempts": N, "seconds": S, "multiplier": M, "max_seconds": X,
"jitter": J}}``, optionally with ``"retry_on": ["ErrorName", ...]`` to retry only
those errors. ``attempts`` is the number of retries after the first failure.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.errors import SpecError

# Failures that retrying cannot fix: the job's input or the job's definition is wrong.
NEVER_RETRIED = frozenset({"ArgumentError", "NoMainFunction", "ScriptNotFound", "InvalidSpec"})


class Constant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempts: int = Field(ge=0, le=1000)
    seconds: float = Field(ge=0, le=7 * 24 * 3600)


class Exponential(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempts: int = Field(ge=0, le=1000)
    seconds: float = Field(ge=0, le=7 * 24 * 3600)
    multiplier: float = Field(default=2.0, ge=1, le=100)
    max_seconds: float = Field(default=3600.0, ge=0, le=7 * 24 * 3600)
    jitter: float = Field(default=0.0, ge=0, le=1)


class RetryPolicy(BaseModel):
    """A parsed retry policy; exactly one of constant / exponential."""

    model_config = ConfigDict(extra="forbid")
    constant: Constant | None = None
    exponential: Exponential | None = None
    retry_on: list[str] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> RetryPolicy:
        if (self.constant is None) == (self.exponential is None):
            raise ValueError("give exactly one of constant or exponential")
        return self

    @property
    def attempts(self) -> int:
        chosen = self.constant or self.exponential
        assert chosen is not None
        return chosen.attempts


def parse_policy(data: dict[str, Any]) -> RetryPolicy:
    """Check a policy; SpecError saying what is wrong."""
    try:
        return RetryPolicy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'retry'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )
        raise SpecError(f"retry: {problems}") from None


def next_delay_s(
    policy: RetryPolicy, retries_done: int, error_name: str, rand: float
) -> float | None:
    """Seconds to wait before the next attempt, or None when the failure is final.

    ``retries_done`` counts retries already made; ``rand`` in [0, 1) feeds the jitter.
    """
    if retries_done >= policy.attempts or error_name in NEVER_RETRIED:
        return None
    if policy.retry_on is not None and error_name not in policy.retry_on:
        return None
    if policy.constant is not None:
        return policy.constant.seconds
    exp = policy.exponential
    assert exp is not None
    delay = min(exp.seconds * exp.multiplier**retries_done, exp.max_seconds)
    return delay * (1 - exp.jitter * rand)


class Backoff:
    """Capped exponential backoff for reconnecting to Redis: 0.1 s doubling up to ``cap_s``."""

    def __init__(self, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.failures = 0

    def next_delay(self) -> float:
        delay: float = min(self.first_s * 2**self.failures, self.cap_s)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
