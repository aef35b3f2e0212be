"""Flows on a real fleet (a benchmark, not a test): 40 sequential fibo(10) steps, warm path.

    python -m bench.flow_fleet [--steps 40] [--repeat 5] [--mode warm|cold]

Starts its own Redis, one scheduler (the flow advancer) and one worker on the
given execution path (``warm``: forked from the fork server, the default), then
runs a flow of ``--steps`` sequential python3 steps, each computing ``fibo(10)``
(Windmill's published figure: 4.3 s standard, 2.4 s dedicated, on an m4.large)
``--repeat`` times, the first as a warm-up. It reports the flow's wall time
(submit to completed record, read by a waiting client) and the per-step overhead:
for each pair of consecutive steps, the next step's ``started_at`` minus the
previous one's ``completed_at`` (record times, ms), i.e. the outcome recorded,
forwarded, applied, the next step enqueued and claimed by the worker.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from typing import Any

from bench.fleet import BenchFleet, Deadline
from gristmill.client import Gristmill

FIBO = """\
def fibo(n: int) -> int:
    return n if n < 2 else fibo(n - 1) + fibo(n - 2)


def main(x: int):
    fibo(10)
    return x + 1
"""


def sequential(steps: int) -> dict[str, Any]:
    modules = [{"id": f"s{i}", "value": {
        "type": "rawscript", "language": "python3", "content": FIBO,
        "input_transforms": {"x": {"type": "javascript", "expr": "previous_result.x ?? previous_result"}}}}
        for i in range(steps)]
    return {"summary": "bench", "value": {"modules": modules}}


def run_once(gm: Gristmill, doc: dict[str, Any], steps: int) -> tuple[float, list[int], list[int]]:
    """One flow: (wall seconds, per-step overheads ms, step run durations ms)."""
    started = time.perf_counter()
    flow_id = gm.run_flow_preview(doc, {"x": 0})
    done = gm.wait(flow_id, 300)
    wall = time.perf_counter() - started
    if done.status != "success" or done.result != steps:
        raise RuntimeError(f"flow ended {done.status}: {done.result!r} {done.error}")
    jobs = [gm.get_job(row.job) for row in gm.flow_steps(flow_id) if row.job]
    overheads = [(b.started_at or 0) - (a.completed_at or 0) for a, b in itertools.pairwise(jobs)]
    return wall, overheads, [j.duration_ms or 0 for j in jobs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flow_fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5, help="runs; the first warms up")
    parser.add_argument("--mode", choices=["warm", "cold"], default="warm")
    args = parser.parse_args(argv)
    with BenchFleet(workers=1, concurrency=2, mode=args.mode) as fleet:
        fleet.wait_ready(Deadline(60))
        gm = Gristmill(fleet.url)
        doc = sequential(args.steps)
        walls: list[float] = []
        overheads: list[int] = []
        runs: list[int] = []
        for index in range(args.repeat):
            wall, overhead, durations = run_once(gm, doc, args.steps)
            if index:
                walls.append(wall)
                overheads += overhead
                runs += durations
        overheads.sort()
        load = os.getloadavg()[0]
        print(f"{args.steps} sequential fibo(10) steps, {args.mode} path, load {load:.1f}: "
              f"flow {statistics.median(walls):.2f} s (median of {len(walls)}, min {min(walls):.2f} s); "
              f"per-step overhead p50 {statistics.median(overheads):.0f} ms, "
              f"p90 {overheads[int(len(overheads) * 0.9)]} ms; step run p50 {statistics.median(runs):.0f} ms")
        gm.redis.close()


if __name__ == "__main__":
    main()
