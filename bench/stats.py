"""Percentiles and summaries of latency samples (milliseconds).

Percentiles use linear interpolation between closest ranks (numpy's default
``linear`` method), so p50 of an even-sized sample is the mean of the two
middle values and p100 is the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``values``; ValueError when empty."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile {p} is not within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The 50th percentile."""
    return percentile(values, 50.0)


@dataclass(frozen=True)
class Summary:
    """Distribution of one latency: sample size and the usual percentiles."""

    n: int
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(values: Sequence[float]) -> Summary | None:
    """min/p50/p90/p99/max/mean of ``values``; None for an empty sample."""
    if not values:
        return None
    return Summary(
        n=len(values),
        min=float(min(values)),
        p50=percentile(values, 50),
        p90=percentile(values, 90),
        p99=percentile(values, 99),
        max=float(max(values)),
        mean=sum(values) / len(values),
    )
