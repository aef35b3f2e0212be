"""The flow machinery's own cost (a benchmark, not a test): no workers, no job processes.

    python -m bench.flows [--steps 40] [--iterations 200]

Starts its own Redis on a free loopback port, then drives flows through
``flows.store.FlowStore`` the way the fleet will: a step's outcome is recorded
in another group's slot, forwarded to the flow, applied by one atomic
transition, and the next step's start is dispatched. Steps "run" instantly in
this process, so the figures are the per-step overhead that flows add on top
of running the step jobs themselves:

1. a sequential flow of ``--steps`` python3 steps (Windmill's published
   figure is 40 ``fibo(10)`` steps): total time, and per step the time from
   the outcome recorded to the next start dispatched (p50, p99);
2. a parallel for-loop of ``--iterations`` iterations: total time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common.connection import connect
from common.keys import Keys
from flows.expr import JsEngine
from flows.model import parse_flow
from flows.state import EarlyReturn, FlowCompleted, StartJob
from flows.store import FlowStore, StepOutcome
from gristmill.embedded import EmbeddedRedis, free_port

FLOW_GROUP = "flows"
STEP_GROUP = "default"


class _Launcher:
    def __init__(self) -> None:
        self.started: list[tuple[float, StartJob]] = []
        self.completed: FlowCompleted | None = None

    def start_job(self, flow_id: str, action: StartJob) -> None:
        self.started.append((time.perf_counter(), action))

    def cancel_jobs(self, flow_id: str, jobs: list[str]) -> None:
        pass

    def early_return(self, flow_id: str, action: EarlyReturn) -> None:
        pass

    def complete_flow(self, flow_id: str, action: FlowCompleted) -> None:
        self.completed = action


def _js(expr: str) -> dict[str, str]:
    return {"type": "javascript", "expr": expr}


def _step(mid: str) -> dict[str, Any]:
    return {"id": mid, "value": {"type": "rawscript", "language": "python3",
                                 "content": "def main(x):\n    return x + 1",
                                 "input_transforms": {"x": _js("previous_result.x")}}}


def _run(fs: FlowStore, doc: dict[str, Any], args: dict[str, Any]) -> tuple[float, list[float], _Launcher]:
    """Run one flow to completion; total seconds and per-step overheads."""
    flow_id = str(uuid.uuid4())
    launcher = _Launcher()
    began = time.perf_counter()
    fs.create(FLOW_GROUP, flow_id, parse_flow(doc), args)
    fs.process(FLOW_GROUP, flow_id, launcher)
    overheads: list[float] = []
    answered = 0
    while launcher.completed is None:
        pending = launcher.started[answered:]
        if not pending:
            raise RuntimeError("the flow stopped without completing")
        answered = len(launcher.started)
        before = len(launcher.started)
        handed = time.perf_counter()
        for _, job in pending:
            result = {"x": job.args.get("x", 0)}
            fs.notify(STEP_GROUP, StepOutcome(FLOW_GROUP, flow_id, job.job, True, result))
        fs.forward(STEP_GROUP, limit=len(pending))
        fs.process(FLOW_GROUP, flow_id, launcher)
        if len(pending) == 1 and len(launcher.started) > before:
            overheads.append(launcher.started[before][0] - handed)
    return time.perf_counter() - began, overheads, launcher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5, help="sequential runs (the first warms up)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-flows-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", port=free_port())
        server.start()
        engine = JsEngine()
        try:
            fs = FlowStore(connect(server.url), Keys("gmbench"), engine)
            modules = [_step(f"s{i}") for i in range(args.steps)]
            sequential = {"summary": "bench", "value": {"modules": modules}}
            totals: list[float] = []
            overheads: list[float] = []
            for run in range(args.repeat):
                total, steps, _ = _run(fs, sequential, {"x": 0})
                if run:
                    totals.append(total)
                    overheads.extend(steps)
            overheads.sort()
            p50, p99 = statistics.median(overheads), overheads[int(len(overheads) * 0.99) - 1]
            print(f"sequential flow of {args.steps} steps: {statistics.median(totals) * 1000:.1f} ms"
                  f" (median of {len(totals)}), per-step overhead p50 {p50 * 1000:.2f} ms,"
                  f" p99 {p99 * 1000:.2f} ms")
            loop = {"summary": "bench", "value": {"modules": [{"id": "l", "value": {
                "type": "forloopflow", "parallel": True, "skip_failures": False,
                "iterator": _js(f"Array.from({{length: {args.iterations}}}, (_, i) => i)"),
                "modules": [_step("c")]}}]}}
            total, _, launcher = _run(fs, loop, {"x": 0})
            assert launcher.completed is not None and launcher.completed.status == "success"
            print(f"parallel for-loop of {args.iterations} iterations: {total:.2f} s")
        finally:
            engine.close()
            server.stop()


if __name__ == "__main__":
    main()
