"""Completions of several slots at once, sent in one pipeline (a group commit).

A slot thread that completes while no send is under way sends its own
completion at once: alone, it costs what a direct call costs, with no other
thread involved. Completions arriving while a send is under way wait; when it
ends, the first of them sends all that queued meanwhile in one pipeline and
the others take their answers from it. A send that fails fails every request
in it, and each caller retries as it would a call of its own (``complete.lua``
answers 2 to a repeat of a completion it has already written).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

R = TypeVar("R")
A = TypeVar("A")


class _Request(Generic[R, A]):
    def __init__(self, request: R) -> None:
        self.request = request
        self.done = threading.Event()
        self.lead = False  # woken to send the next batch, not with an answer
        self.answer: A | None = None
        self.error: BaseException | None = None

    def result(self) -> A:
        if self.error is not None:
            raise self.error
        assert self.answer is not None
        return self.answer


class GroupCommit(Generic[R, A]):
    """``submit`` one request; ``send`` takes a batch and answers for each, in order."""

    def __init__(self, send: Callable[[list[R]], list[A]]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._queue: list[_Request[R, A]] = []
        self._busy = False  # a caller is sending (or about to)

    def submit(self, request: R) -> A:
        mine: _Request[R, A] = _Request(request)
        with self._lock:
            self._queue.append(mine)
            lead = not self._busy
            self._busy = True
        if not lead:
            mine.done.wait()
            if not mine.lead:
                return mine.result()
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            answers = self._send([r.request for r in batch])
            for r, answer in zip(batch, answers, strict=True):
                r.answer = answer
        except BaseException as exc:  # every caller in the batch gets it, and retries
            for r in batch:
                r.error = exc
        with self._lock:
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._busy = False
        for r in batch:
            if r is not mine:
                r.done.set()
        if successor is not None:
            successor.lead = True
            successor.done.set()
        return mine.result()
