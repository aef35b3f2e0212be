"""Where a dedicated worker runs the next job of a script version (worker/dedicated_plan.py)."""

from __future__ import annotations

import pytest

from worker.dedicated_plan import START, is_async_main, place, surplus


@pytest.mark.parametrize(("loads", "room", "most", "expected"), [
    ([], 1, 4, START),                 # no process yet: start one
    ([0], 1, 4, 0),                    # an idle process takes it (state stays warm in one)
    ([1], 1, 4, START),                # busy sync main: a second process, one per slot
    ([1, 0, 1], 1, 4, 1),              # the first with room, not a new one
    ([1, 1, 1], 1, 4, START),          # three busy, a fourth slot: a fourth process
    ([1, 1, 1, 1], 1, 4, 0),           # at the bound: the least loaded, queued in its socket
    ([2, 1, 3], 1, 3, 1),              # the least loaded, not the first
    ([1], 1, 1, 0),                    # --dedicated-processes 1: everything to the one process
    ([3], 4, 4, 0),                    # --dedicated-threads 4: room for a fourth job
    ([4], 4, 4, START),                # full at four threads: a second process
    ([9], None, 4, 0),                 # async main: its event loop takes every job
    ([], None, 4, START),              # async main, no process yet
])
def test_place(loads: list[int], room: int | None, most: int, expected: int) -> None:
    """The first process with room; else a new one under the bound; else the least loaded."""
    assert place(loads, room, most) == expected


@pytest.mark.parametrize(("source", "expected"), [
    ("def main():\n    return 1\n", False),
    ("async def main():\n    return 1\n", True),
    ("import asyncio\n\nasync def helper():\n    pass\n\ndef main():\n    pass\n", False),
    ("def main():\n    pass\n\nasync def main():\n    pass\n", True),   # the last one wins
    ("class A:\n    async def main(self):\n        pass\n", False),     # not module level
    ("def main(:\n", False),                                             # a syntax error: sync
    ("main = lambda: 1\n", False),
])
def test_is_async_main(source: str, expected: bool) -> None:
    """Only a module-level ``async def main`` (the last definition) reads as async."""
    assert is_async_main(source) is expected


@pytest.mark.parametrize(("loads", "idle_s", "expected"), [
    ([], [], []),
    ([0], [999.0], []),                          # the first process stays, however long unused
    ([0, 0, 0], [999.0, 999.0, 10.0], [1]),      # only those unused long enough
    ([0, 1, 0], [999.0, 999.0, 300.0], [2]),     # a process with a job is never surplus
    ([1, 0], [0.0, 299.9], []),                  # not yet
])
def test_surplus(loads: list[int], idle_s: list[float], expected: list[int]) -> None:
    """Every process but a version's first, with no job and unused for 300 s, is stopped."""
    assert surplus(loads, idle_s, 300.0) == expected
