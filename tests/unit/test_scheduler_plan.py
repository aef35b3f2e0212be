"""The scheduler's reads at rest, planned from data: when to look for the dead again."""

from __future__ import annotations

import pytest

from scheduler.scheduler import next_dead_look, renew_every_ms

LEASE = 10_000


@pytest.mark.parametrize(("dead", "oldest_alive", "now", "expected"), [
    ([], None, 50_000, 60_000),  # nobody registered: a newcomer needs a whole lease
    ([], 48_000, 50_000, 58_000),  # the oldest beat seen expires first
    ([], 50_000, 50_000, 60_000),
    (["w1"], 49_000, 50_000, 50_000),  # found dead ones: look again at the next tick
    (["w1"], None, 50_000, 50_000),
])
def test_next_look(dead: list[str], oldest_alive: int | None, now: int, expected: int) -> None:
    """No member can expire before the oldest beat seen plus the lease."""
    assert next_dead_look(dead, oldest_alive, LEASE, now) == expected


@pytest.mark.parametrize(("lease_ms", "expected"), [(10_000, 3_333), (3, 1), (1, 1)])
def test_renew_every(lease_ms: int, expected: int) -> None:
    """The lease is renewed three times per lease, never more often than every ms."""
    assert renew_every_ms(lease_ms) == expected
