"""Flows on a real fleet (a benchmark, not a test): 40 sequential fibo(10) steps, warm path;
a parallel for-loop of 1,000 iterations.

    python -m bench.flow_fleet [--steps 40] [--repeat 5] [--mode warm|cold] [--loop 1000] [--trace]

Starts its own Redis, one scheduler (the flow advancer) and one worker on the
given execution path (``warm``: forked from the fork server, the default), then
runs a flow of ``--steps`` sequential python3 steps, each computing ``fibo(10)``
(Windmill's published figure: 4.3 s standard, 2.4 s dedicated, on an m4.large)
``--repeat`` times, the first as a warm-up. It reports the flow's wall time
(submit to completed record, read by a waiting client) and the per-step overhead:
for each pair of consecutive steps, the next step's ``started_at`` minus the
previous one's ``completed_at`` (record times, ms), i.e. the outcome recorded,
forwarded, applied, the next step enqueued and claimed by the worker. It is split in
two by the next step's ``created_at`` (written when the advancer enqueues it): *hand-off*
(completed -> enqueued: the outcome forwarded, the advancer woken, the transition read,
computed and committed) and *pickup* (enqueued -> started: the worker woken and its claim).

``--trace`` runs the sequential flow once more under Redis ``MONITOR`` (the bench's own
Redis) and splits the hand-off by the server's clock: the outcome recorded
(``complete.lua``) -> the worker's forward read -> the event queued (the advancer's wake-up)
-> the advancer's read -> its commit -> the next step's enqueue (p50 of each gap, ms).

Then a flow of one parallel for-loop of ``--loop`` iterations (0: skip), each a
python3 step returning its item, on the same fleet: submit to completed flow.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import threading
import time
from dataclasses import dataclass
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


def parallel_loop(iterations: int) -> dict[str, Any]:
    step = {"id": "c", "value": {
        "type": "rawscript", "language": "python3", "content": "def main(i: int):\n    return i\n",
        "input_transforms": {"i": {"type": "javascript", "expr": "flow_input.iter.value"}}}}
    return {"summary": "bench loop", "value": {"modules": [{"id": "l", "value": {
        "type": "forloopflow", "parallel": True,
        "iterator": {"type": "javascript", "expr": f"Array.from({{length: {iterations}}}, (_, i) => i)"},
        "modules": [step]}}]}}


@dataclass
class Run:
    wall: float
    overheads: list[int]  # completed -> next started, ms
    handoffs: list[int]  # completed -> next enqueued (created_at), ms
    pickups: list[int]  # enqueued -> started, ms
    durations: list[int]


def run_once(gm: Gristmill, doc: dict[str, Any], steps: int) -> Run:
    """One flow, its wall time and its steps' record times."""
    started = time.perf_counter()
    flow_id = gm.run_flow_preview(doc, {"x": 0})
    done = gm.wait(flow_id, 300)
    wall = time.perf_counter() - started
    if done.status != "success" or done.result != steps:
        raise RuntimeError(f"flow ended {done.status}: {done.result!r} {done.error}")
    jobs = [gm.get_job(row.job) for row in gm.flow_steps(flow_id) if row.job]
    pairs = list(itertools.pairwise(jobs))
    return Run(wall, [(b.started_at or 0) - (a.completed_at or 0) for a, b in pairs],
               [b.created_at - (a.completed_at or 0) for a, b in pairs],
               [(b.started_at or 0) - b.created_at for _, b in pairs], [j.duration_ms or 0 for j in jobs])


# (stage, what ends it in MONITOR's output), in the hand-off's order
TRACE_MARKS = [
    ("recorded", '"RPUSH" "gm:{wg:'), ("forward read", '"LRANGE" "gm:{wg:'),
    ("event queued", '"RPUSH" "gm:{wg:'), ("advancer read", '"HMGET" "gm:{wg:'),
    ("commit", '"EVALSHA"'), ("next enqueued", '"SET" "gm:jobloc:'),
]
TRACE_KEYS = [":flownotify", ":flownotify", ":flowq", ":flow:", "5", ""]


def trace(gm: Gristmill, url: str, doc: dict[str, Any], steps: int) -> dict[str, float]:
    """One more flow under MONITOR: the median gap (ms) before each stage of the hand-off."""
    lines: list[tuple[float, str]] = []
    client = gm.redis.__class__.from_url(url)
    with client.monitor() as monitor:
        done = threading.Event()

        def listen() -> None:
            while not done.is_set():
                try:
                    command = monitor.next_command()
                except Exception:  # the connection closed at the end
                    return
                lines.append((float(command["time"]), str(command["command"])))

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        run_once(gm, doc, steps)
        done.set()
        gm.redis.ping()
        listener.join(5)
    gaps: dict[str, list[float]] = {stage: [] for stage, _ in TRACE_MARKS[1:]}
    i = 0
    while True:  # each step: the marks in order, each the first after the previous one
        found: list[float] = []
        for (stage, mark), key in zip(TRACE_MARKS, TRACE_KEYS, strict=True):
            while i < len(lines) and not _is_mark(lines[i][1], stage, mark, key):
                i += 1
            if i == len(lines):
                return {stage: statistics.median(v) for stage, v in gaps.items() if v}
            found.append(lines[i][0])
        for (stage, _), before, after in zip(TRACE_MARKS[1:], found[:-1], found[1:], strict=True):
            gaps[stage].append((after - before) * 1000)


def _is_mark(line: str, stage: str, mark: str, key: str) -> bool:
    if stage == "commit":  # flow_commit.lua: EVALSHA <sha> 5 <flow key> ...
        return line.startswith("EVALSHA ") and " 5 " in line and ":flow:" in line
    words = mark.replace('"', "").split()
    return line.startswith(" ".join(words)) and key in line.split(" ")[1]


def pct(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flow_fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5, help="runs; the first warms up")
    parser.add_argument("--mode", choices=["warm", "cold"], default="warm")
    parser.add_argument("--loop", type=int, default=1000, help="parallel for-loop iterations (0: skip)")
    parser.add_argument("--concurrency", type=int, default=2, help="the worker's slots")
    parser.add_argument("--trace", action="store_true", help="split the hand-off by Redis MONITOR")
    args = parser.parse_args(argv)
    with BenchFleet(workers=1, concurrency=args.concurrency, mode=args.mode) as fleet:
        fleet.wait_ready(Deadline(60))
        gm = Gristmill(fleet.url)
        doc = sequential(args.steps)
        runs = [run_once(gm, doc, args.steps) for _ in range(args.repeat)][1:]
        walls = [r.wall for r in runs]
        overheads = [v for r in runs for v in r.overheads]
        handoffs = [v for r in runs for v in r.handoffs]
        pickups = [v for r in runs for v in r.pickups]
        durations = [v for r in runs for v in r.durations]
        print(f"{args.steps} sequential fibo(10) steps, {args.mode} path, load {os.getloadavg()[0]:.1f}: "
              f"flow {statistics.median(walls):.2f} s (median of {len(walls)}, min {min(walls):.2f} s); "
              f"per-step overhead p50 {statistics.median(overheads):.0f} ms, p90 {pct(overheads, 0.9)} ms "
              f"(hand-off p50 {statistics.median(handoffs):.0f} ms, pickup p50 "
              f"{statistics.median(pickups):.0f} ms); step run p50 {statistics.median(durations):.0f} ms")
        if args.trace:
            gaps = trace(gm, fleet.url, doc, args.steps)
            print("  hand-off by Redis MONITOR, p50 gap before each: "
                  + ", ".join(f"{stage} {ms:.2f} ms" for stage, ms in gaps.items()))
        if args.loop:
            started = time.perf_counter()
            flow_id = gm.run_flow_preview(parallel_loop(args.loop))
            done = gm.wait(flow_id, 1800)
            wall = time.perf_counter() - started
            if done.status != "success" or done.result != list(range(args.loop)):
                raise RuntimeError(f"loop flow ended {done.status}: {done.error}")
            print(f"parallel for-loop of {args.loop} iterations ({args.concurrency} slots), load "
                  f"{os.getloadavg()[0]:.1f}: {wall:.2f} s, {args.loop / wall:.0f} steps/s")
        gm.redis.close()


if __name__ == "__main__":
    main()
