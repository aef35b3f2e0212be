"""GroupCommit: a lone completion is sent at once; those arriving during a send go in one batch."""

from __future__ import annotations

import threading
import time

import pytest

from worker.groupcommit import GroupCommit

pytestmark = pytest.mark.timeout(30)


def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_a_lone_request_is_sent_at_once_by_its_caller() -> None:
    batches: list[tuple[list[int], str]] = []
    commit = GroupCommit(lambda batch: batches.append((batch, threading.current_thread().name))
                         or [n * 10 for n in batch])
    assert commit.submit(1) == 10
    assert commit.submit(2) == 20
    assert batches == [([1], "MainThread"), ([2], "MainThread")]


def test_requests_arriving_during_a_send_go_together_in_the_next() -> None:
    """A's send is held while B and C arrive; then one batch carries B and C, each gets its
    own answer."""
    release = threading.Event()
    batches: list[list[str]] = []

    def send(batch: list[str]) -> list[str]:
        batches.append(list(batch))
        if batch == ["a"]:
            release.wait(10)
        return [item.upper() for item in batch]

    commit: GroupCommit[str, str] = GroupCommit(send)
    answers: dict[str, str] = {}
    threads = [threading.Thread(target=lambda n=n: answers.update({n: commit.submit(n)}))
               for n in "abc"]
    threads[0].start()
    wait_for(lambda: batches == [["a"]])
    threads[1].start()
    threads[2].start()
    wait_for(lambda: len(commit._queue) == 2)
    release.set()
    for thread in threads:
        thread.join(10)
    assert answers == {"a": "A", "b": "B", "c": "C"}
    assert batches[0] == ["a"] and sorted(batches[1]) == ["b", "c"] and len(batches) == 2


def test_a_failed_send_fails_every_request_in_it_and_the_next_goes_on() -> None:
    release = threading.Event()
    calls: list[list[int]] = []

    def send(batch: list[int]) -> list[int]:
        calls.append(list(batch))
        if batch == [1]:
            release.wait(10)
            return [1]
        if len(calls) == 2:
            raise ConnectionError("lost")
        return batch

    commit: GroupCommit[int, int] = GroupCommit(send)
    results: dict[int, object] = {}

    def submit(n: int) -> None:
        try:
            results[n] = commit.submit(n)
        except ConnectionError as exc:
            results[n] = exc

    first = threading.Thread(target=submit, args=(1,))
    first.start()
    wait_for(lambda: calls == [[1]])
    others = [threading.Thread(target=submit, args=(n,)) for n in (2, 3)]
    for thread in others:
        thread.start()
    wait_for(lambda: len(commit._queue) == 2)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert results[1] == 1
    assert isinstance(results[2], ConnectionError) and isinstance(results[3], ConnectionError)
    assert commit.submit(4) == 4  # not stuck: the next caller sends at once
