"""How long a flow step waits before its next attempt (pure), as Windmill spells retries.

``constant``: ``attempts`` retries, ``seconds`` apart. ``exponential``: the
n-th retry waits ``multiplier * seconds ** n`` seconds, moved by up to
``random_factor`` percent either way. Given both, the constant retries come
first. Both are capped (attempts and interval), as Windmill caps them.
"""

from __future__ import annotations

import hashlib

from flows.model import Retry

MAX_RETRY_ATTEMPTS = 1000
MAX_RETRY_INTERVAL_S = 6 * 3600


def _unit(seed: str) -> float:
    """A number in [0, 1) derived from ``seed``: jitter that a replayed transition repeats."""
    digest = hashlib.sha256(seed.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def retry_delay_s(retry: Retry | None, failures: int, seed: str) -> float | None:
    """Seconds before the next attempt after ``failures`` failed ones; None when none is left.

    With both kinds, the constant retries come first, then the exponential ones,
    whose n counts the constant retries too (as Windmill counts them).
    """
    if retry is None or failures < 1:
        return None
    constant = retry.constant.attempts if retry.constant is not None else 0
    exp = retry.exponential
    total = constant + (exp.attempts if exp is not None else 0)
    if failures > min(total, MAX_RETRY_ATTEMPTS):
        return None
    if failures <= constant:
        assert retry.constant is not None
        return float(min(retry.constant.seconds, MAX_RETRY_INTERVAL_S))
    assert exp is not None
    try:
        delay = float(exp.multiplier * exp.seconds**failures)
    except OverflowError:
        delay = float(MAX_RETRY_INTERVAL_S)
    if exp.random_factor:
        delay *= 1 + (2 * _unit(seed) - 1) * exp.random_factor / 100
    return max(0.0, min(delay, float(MAX_RETRY_INTERVAL_S)))
