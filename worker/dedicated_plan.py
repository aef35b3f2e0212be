"""Where a dedicated worker runs the next job of a script version: pure decisions, data to data.

A dedicated worker keeps up to ``most`` processes per script version (by
default one per slot of the worker, ``--dedicated-processes``). Each process
has ``room`` jobs at once: a sync ``main`` its ``--dedicated-threads`` (1 by
default: one job at a time, as the README promises); an ``async def main``
has no bound of its own (``None``): its event loop takes every job it is
given, so it never needs a second process.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

START = -1  # place(): start a new process for the job


def place(loads: Sequence[int], room: int | None, most: int) -> int:
    """The index of the process that takes the next job, or START for a new one.

    ``loads``: the jobs each live process of the version holds (in start
    order). The first process with room takes it (so light traffic stays in
    one warm process); if none has room, a new one is started while there are
    fewer than ``most``; past that, the least loaded takes it and the job
    waits in its socket behind the running one.
    """
    for index, load in enumerate(loads):
        if room is None or load < room:
            return index
    if len(loads) < most:
        return START
    return min(range(len(loads)), key=lambda i: loads[i])


def is_async_main(source: str) -> bool:
    """Whether the script's module-level ``main`` is an ``async def`` (read, not run).

    Only the number of processes depends on it: a script that builds ``main``
    some other way reads as sync and may get a process per slot, which is
    still correct, each process running its own event loop.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False  # the process's import reports the error as the job's failure
    found = False
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and node.name == "main":
            found = isinstance(node, ast.AsyncFunctionDef)  # the last definition wins, as at run
    return found


def surplus(loads: Sequence[int], idle_s: Sequence[float], keep_idle_s: float) -> list[int]:
    """The processes of one version to stop: every one but the first that has had no job
    for ``keep_idle_s`` (the first stays, warm, for the next job whatever the wait)."""
    return [index for index in range(1, len(loads))
            if loads[index] == 0 and idle_s[index] >= keep_idle_s]
