"""The flow duties' plan at rest (scheduler/flows.py): when the advancer looks and how long it blocks."""

from __future__ import annotations

import pytest

from scheduler.flows import BLOCK_S, LOOK_AGAIN_MS, STALE_AFTER_MS, Look, after_take, block_for, next_look

NOW = 1_000_000
REST = NOW + int(BLOCK_S * 1000)


@pytest.mark.parametrize(("look", "expected"), [
    (Look(NOW, None, None), REST),  # nothing to do: the safety net's look only
    (Look(NOW, NOW + 2_000, None), NOW + 2_000),  # the next timer
    (Look(NOW, NOW + 40_000, None), REST),  # a timer further than BLOCK_S: looked at again first
    (Look(NOW, None, NOW - 1_000), NOW - 1_000 + STALE_AFTER_MS),  # when the oldest flow goes stale
    (Look(NOW, NOW + 9_000, NOW), NOW + STALE_AFTER_MS),  # the earlier of the two
    (Look(NOW, NOW + 1, NOW), NOW + 1),
    (Look(NOW, NOW - 5, None), NOW),  # still due (more than a page): at once, not in the past
    (Look(NOW, None, NOW - 60_000), NOW),  # stale flows left after a page: at once
])
def test_next_look(look: Look, expected: int) -> None:
    assert next_look(look) == expected


@pytest.mark.parametrize(("next_look_ms", "last_look_ms", "expected"), [
    (REST, NOW, NOW + LOOK_AGAIN_MS),  # a taken flow may have added a timer: look within a second
    (NOW + 300, NOW, NOW + 300),  # an earlier look stays
    (REST, NOW - 5_000, NOW - 5_000 + LOOK_AGAIN_MS),  # overdue: at once
])
def test_a_taken_flow_brings_the_next_look_forward(next_look_ms: int, last_look_ms: int,
                                                    expected: int) -> None:
    assert after_take(next_look_ms, last_look_ms) == expected


@pytest.mark.parametrize(("next_look_ms", "expected"), [
    (REST, BLOCK_S),
    (NOW + 60_000, BLOCK_S),  # never longer than BLOCK_S
    (NOW + 2_500, 2.5),
    (NOW, 0.01),  # due: the shortest wait, never 0 (which would block forever)
    (NOW - 10_000, 0.01),
])
def test_block_for(next_look_ms: int, expected: float) -> None:
    assert block_for(next_look_ms, NOW) == expected
