"""The flow machinery's own cost (a benchmark, not a test): no workers, no job processes.

    python -m bench.flows [--steps 40] [--iterations 200] [--like-fleet] [--no-fast]

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

The per-step time is split in stages (p50 of each, from ``time.perf_counter_ns``
around the calls): the forward (``flows.handoff.forward``), the advancer's read, the
transition (expressions included), the commit (``flow_commit.lua``) and the carrying
out of the actions. ``--like-fleet`` gives the steps ``bench.flow_fleet``'s input
transform (``previous_result.x ?? previous_result``, results are numbers);
``--no-fast`` sends every expression to V8 (the expression engine without its fast path).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import flows.store
from common.connection import connect
from common.keys import Keys
from flows.expr import JsEngine
from flows.handoff import StepOutcome
from flows.model import parse_flow
from flows.state import EarlyReturn, FlowCompleted, StartJob
from flows.store import FlowStore
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


FLEET_EXPR = "previous_result.x ?? previous_result"  # bench.flow_fleet's, results are numbers
STAGES: dict[str, list[int]] = collections.defaultdict(list)  # ns per call, by stage


def _timed(stage: str, call: Any) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter_ns()
        try:
            return call(*args, **kwargs)
        finally:
            STAGES[stage].append(time.perf_counter_ns() - began)
    return timed


def _instrument(fs: FlowStore) -> None:
    """Time the stages of a step's hand-off (a bench-only wrapping of the calls, not a hook)."""
    fs.forward = _timed("forward", fs.forward)  # type: ignore[method-assign]
    fs._advance = _timed("advance", fs._advance)  # type: ignore[method-assign]
    fs._apply = _timed("transition", fs._apply)  # type: ignore[method-assign]
    fs._carry_out_heads = _timed("carry out", fs._carry_out_heads)  # type: ignore[method-assign]
    flows.store.FLOW_COMMIT = _timed("commit", flows.store.FLOW_COMMIT)


def _step(mid: str, expr: str = "previous_result.x") -> dict[str, Any]:
    return {"id": mid, "value": {"type": "rawscript", "language": "python3",
                                 "content": "def main(x):\n    return x + 1",
                                 "input_transforms": {"x": _js(expr)}}}


def _run(fs: FlowStore, doc: dict[str, Any], args: dict[str, Any], *,
         numbers: bool = False) -> tuple[float, list[float], _Launcher]:
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
            result = job.args.get("x", 0) + 1 if numbers else {"x": job.args.get("x", 0)}
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
    parser.add_argument("--like-fleet", action="store_true", help=f"steps' transform {FLEET_EXPR!r}")
    parser.add_argument("--no-fast", action="store_true", help="every expression evaluated by V8")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-flows-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", port=free_port())
        server.start()
        engine = JsEngine(fast=not args.no_fast)
        try:
            fs = FlowStore(connect(server.url), Keys("gmbench"), engine)
            _instrument(fs)
            expr = FLEET_EXPR if args.like_fleet else "previous_result.x"
            modules = [_step(f"s{i}", expr) for i in range(args.steps)]
            sequential = {"summary": "bench", "value": {"modules": modules}}
            totals: list[float] = []
            overheads: list[float] = []
            for run in range(args.repeat):
                if run == 1:
                    STAGES.clear()  # the warm-up's are not counted
                total, steps, _ = _run(fs, sequential, {"x": 0}, numbers=args.like_fleet)
                if run:
                    totals.append(total)
                    overheads.extend(steps)
            overheads.sort()
            p50, p99 = statistics.median(overheads), overheads[int(len(overheads) * 0.99) - 1]
            print(f"sequential flow of {args.steps} steps: {statistics.median(totals) * 1000:.1f} ms"
                  f" (median of {len(totals)}), per-step overhead p50 {p50 * 1000:.2f} ms,"
                  f" p99 {p99 * 1000:.2f} ms")
            print("  stages, p50 per call: " + ", ".join(
                f"{stage} {statistics.median(ns) / 1e6:.2f} ms" for stage, ns in STAGES.items())
                  + " (advance = read + transition + commit)")
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
