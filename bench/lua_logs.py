"""The two scripts that write a job's log lines under its byte budget, timed in Redis.

``python -m bench.lua_logs [--calls N] [--lines L] [--rounds R]`` starts its own
Redis on a free port and runs ``Store.append_logs`` (append_logs.lua) and
``Store.complete`` with its last lines (complete.lua) ``N`` times each, every
call with ``L`` lines of which the later half pass the job's log budget (so the
cut and its marker line run too). It prints Redis's own time per call
(``INFO commandstats``, EVALSHA's usec_per_call, reset before each script) for
each of ``R`` rounds: compare two trees by running it from each, alternately.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import uuid
from pathlib import Path

from common.connection import connect
from common.keys import Keys
from common.models import Job, Kind, Status
from common.store import Store
from gristmill.embedded import EmbeddedRedis, free_port

LINE = "x" * 100


def _running(store: Store, n: int) -> list[Job]:
    """``n`` jobs claimed and started by one worker."""
    for _ in range(n):
        store.enqueue(Job(id=str(uuid.uuid4()), kind=Kind.PREVIEW, status=Status.QUEUED,
                          tag="python3", group="default", language="python3", code="",
                          scheduled_for=0, created_at=0), fresh_id=True)
    return store.claim_start("default", "bench", n, "c")


def _evalsha_us(store: Store) -> float:
    stats = store.client.info("commandstats").get("cmdstat_evalsha", {})
    return float(stats.get("usec_per_call", 0.0))


def measure(store: Store, calls: int, lines: int) -> dict[str, float]:
    """Redis microseconds per call of each script, one fresh running job per call."""
    batch = [(1_700_000_000_000 + i, "stdout", LINE) for i in range(lines)]
    budget = len(LINE) * lines // 2
    out: dict[str, float] = {}
    jobs = _running(store, calls)
    store.client.config_resetstat()
    for job in jobs:
        store.append_logs(job, batch, max_bytes=budget)
    out["append_logs"] = _evalsha_us(store)
    jobs = _running(store, calls)
    store.client.config_resetstat()
    for job in jobs:
        store.complete(job, Status.SUCCESS, {"result": 1}, retention_s=60, logs=batch,
                       known_redactions=0, max_log_bytes=budget)
    out["complete"] = _evalsha_us(store)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lua_logs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--lines", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    ns = p.parse_args(argv)
    data = Path(tempfile.mkdtemp(prefix="gristmill-bench-"))
    server = EmbeddedRedis(data, port=free_port())
    server.start()
    try:
        store = Store(connect(server.url), Keys("gm"))
        measure(store, 200, ns.lines)  # warm: scripts loaded
        for _ in range(ns.rounds):
            figures = measure(store, ns.calls, ns.lines)
            print("  ".join(f"{name} {us:.1f} us/call" for name, us in figures.items())
                  + f"  ({ns.calls} calls of {ns.lines} lines)")
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
