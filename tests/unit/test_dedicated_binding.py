"""The dedicated program binds each job's args with the Binder it made once, over a socketpair."""

from __future__ import annotations

import io
import json
import socket

import pytest

from worker.executors.binding import Binder
from worker.executors.dedicated import Channel, LineRouter, Server, frame, unframe

CALLS: list[tuple[int, list[int]]] = []


def main(n: int, xs: list[int] | None = None) -> int:
    CALLS.append((n, xs or []))
    return n * 2


def _replies(sock: socket.socket) -> list[dict[str, object]]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    bodies, rest, too_large = unframe(data)
    assert rest == b"" and not too_large
    return [json.loads(body) for body in bodies]


@pytest.mark.parametrize("threads", [1, 2])
def test_each_job_gets_its_own_args_converted(threads: int) -> None:
    """Jobs through one Server: each is bound afresh (converted, defaults, errors), in order."""
    CALLS.clear()
    worker_end, process_end = socket.socketpair()
    with worker_end, process_end:
        channel = Channel(process_end)
        routers = (LineRouter("stdout", channel, io.StringIO()),
                   LineRouter("stderr", channel, io.StringIO()))
        server = Server(Binder(main), channel, routers, "main.py")
        worker_end.sendall(
            frame({"t": "run", "j": "a", "args": {"n": "3", "xs": ["1", 2]}})
            + frame({"t": "run", "j": "b", "args": {"n": 4}})
            + frame({"t": "run", "j": "c", "args": {"xs": []}})
            + frame({"t": "run", "j": "d", "args": {"n": "x"}}))
        worker_end.shutdown(socket.SHUT_WR)
        server.serve_sync(threads)
        process_end.shutdown(socket.SHUT_WR)
        replies = {r["j"]: r for r in _replies(worker_end)}
    assert replies["a"] == {"t": "done", "j": "a", "ok": True, "result": 6}
    assert replies["b"] == {"t": "done", "j": "b", "ok": True, "result": 8}
    for job, fragment in (("c", "missing required argument(s) for main: n"),
                          ("d", "argument 'n' of main: expected int")):
        error = replies[job]["error"]
        assert replies[job]["ok"] is False and isinstance(error, dict)
        assert error["name"] == "ArgumentError" and fragment in error["message"]
    assert sorted(CALLS) == [(3, [1, 2]), (4, [])]
