"""The two scripts that write a job's log lines under its byte budget, timed in Redis.

``python -m bench.lua_logs [--calls N] [--lines L] [--against DIR]`` starts its
own Redis on a free port and runs ``Store.append_logs`` (append_logs.lua) and
``Store.complete`` with its last lines (complete.lua) ``N`` times each, every
call on a fresh running job with ``L`` lines of which the later half pass the
job's log budget (so the cut and its marker line run too). It prints Redis's
own time per call (``INFO commandstats``: the script's execution, no round
trip), as the mean of each block of 25 calls: the median and p90 of those
means, in microseconds.

``--against DIR``: the same two scripts as read from another tree's
``common/lua`` (e.g. an older commit's, exported with ``git archive``) run
too, block by block alternating with this tree's on the same server, so a
shared machine's load falls on both alike.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.stats import percentile
from common import luascripts
from common.connection import connect
from common.keys import Keys
from common.luascripts import LuaScript, assemble
from common.models import Job, Kind, Status
from common.store import Store
from gristmill.embedded import EmbeddedRedis, free_port

LINE = "x" * 100
BLOCK = 25  # calls per measured block
Variant = tuple[str, LuaScript, LuaScript]  # name, append_logs, complete


def _running(store: Store, n: int) -> list[Job]:
    """``n`` jobs claimed and started by one worker."""
    for _ in range(n):
        store.enqueue(Job(id=str(uuid.uuid4()), kind=Kind.PREVIEW, status=Status.QUEUED,
                          tag="python3", group="default", language="python3", code="",
                          scheduled_for=0, created_at=0), fresh_id=True)
    return store.claim_start("default", "bench", n, "c")


def _variant(name: str, lua_dir: Path) -> Variant:
    def read(file_name: str) -> str:
        return (lua_dir / file_name).read_text()

    return (name, LuaScript("append_logs", assemble(read("append_logs.lua"), read)),
            LuaScript("complete", assemble(read("complete.lua"), read)))


def _evalsha_usec(store: Store) -> tuple[int, int]:
    """(calls, total microseconds) of EVALSHA so far: Redis's own time, scripts' commands in."""
    stats = store.client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def measure(store: Store, variants: list[Variant], calls: int, lines: int
            ) -> dict[tuple[str, str], list[float]]:
    """Mean Redis microseconds per call of each block of BLOCK calls, by (variant, script);
    the variants take turns block by block."""
    batch = [(1_700_000_000_000 + i, "stdout", LINE) for i in range(lines)]
    budget = len(LINE) * lines // 2
    steps: list[tuple[str, Callable[[Job], object]]] = [
        ("append_logs", lambda job: store.append_logs(job, batch, max_bytes=budget)),
        ("complete", lambda job: store.complete(job, Status.SUCCESS, {"result": 1}, retention_s=60,
                                                logs=batch, known_redactions=0,
                                                max_log_bytes=budget)),
    ]
    out: dict[tuple[str, str], list[float]] = {}
    for script, call in steps:
        jobs = _running(store, calls * len(variants))
        for block, start in enumerate(range(0, len(jobs), BLOCK)):
            name, append, complete = variants[block % len(variants)]
            luascripts.APPEND_LOGS, luascripts.COMPLETE = append, complete
            calls_before, usec_before = _evalsha_usec(store)
            for job in jobs[start:start + BLOCK]:
                call(job)
            calls_after, usec_after = _evalsha_usec(store)
            out.setdefault((name, script), []).append(
                (usec_after - usec_before) / (calls_after - calls_before))
    luascripts.APPEND_LOGS, luascripts.COMPLETE = variants[0][1], variants[0][2]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lua_logs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--lines", type=int, default=20)
    p.add_argument("--against", type=Path, metavar="DIR",
                   help="another tree's common/lua, run alternately with this one's")
    ns = p.parse_args(argv)
    variants = [("this tree", luascripts.APPEND_LOGS, luascripts.COMPLETE)]
    if ns.against is not None:
        variants.append(_variant(f"{ns.against}", ns.against))
    data = Path(tempfile.mkdtemp(prefix="gristmill-bench-"))
    server = EmbeddedRedis(data, port=free_port())
    server.start()
    try:
        store = Store(connect(server.url), Keys("gm"))
        measure(store, variants, 200, ns.lines)  # warm: scripts loaded, first keys made
        figures = measure(store, variants, ns.calls, ns.lines)
        for (variant, script), values in sorted(figures.items(), key=lambda kv: kv[0][::-1]):
            print(f"{script:12} {variant:28} median {percentile(values, 50):6.1f} us  "
                  f"p90 {percentile(values, 90):6.1f} us  ({len(values)} blocks of {BLOCK} "
                  f"calls of {ns.lines} lines)")
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
