"""The dedicated process's output routing (worker/executors/dedicated.py), over a real socketpair."""

from __future__ import annotations

import io
import json
import socket

from worker.executors.dedicated import Channel, LineRouter, current_job, unframe


def _messages(sock: socket.socket) -> list[dict[str, object]]:
    sock.setblocking(False)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except BlockingIOError:
        pass
    bodies, rest, too_large = unframe(data)
    assert rest == b"" and not too_large
    return [json.loads(body) for body in bodies]


def test_only_running_jobs_lines_go_to_the_worker() -> None:
    """A running job's lines are its log; after its end (a task it left behind) they are the
    process's own output, so nothing is sent that no one waits for."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        channel, fallback = Channel(theirs), io.StringIO()
        router = LineRouter("stdout", channel, fallback)
        token = current_job.set("j1")
        try:
            channel.running.add("j1")
            router.write("one\ntwo")
            router.end("j1")
            channel.running.discard("j1")
            router.write("late\n")
        finally:
            current_job.reset(token)
        router.write("outside\n")
        assert [(m["j"], m["l"]) for m in _messages(ours)] == [("j1", "one"), ("j1", "two")]
        assert fallback.getvalue() == "late\noutside\n"
