"""A test driver for the pure flow transition: feeds events, answers step jobs, records actions.

No Redis and no processes: a step job is "run" by calling the Python function
the test gives for its module id (a raise is a failure), or by echoing its
args when the test gives none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flows.expr import JsEngine
from flows.model import parse_flow
from flows.state import (
    Action,
    AwaitResume,
    CancelJobs,
    EarlyReturn,
    Event,
    FlowCompleted,
    FrameState,
    JobCompleted,
    Start,
    StartJob,
)
from flows.transition import advance, initial_state

FLOW_ID = "6a1f3c2e-0000-4000-8000-000000000001"
T0 = 1_700_000_000_000
ENGINE = JsEngine()

Step = Callable[[dict[str, Any], int], Any]


def js(expr: str) -> dict[str, Any]:
    return {"type": "javascript", "expr": expr}


def static(value: Any) -> dict[str, Any]:
    return {"type": "static", "value": value}


def raw(mid: str, inputs: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A python3 rawscript module whose inputs are transforms."""
    return {"id": mid, "value": {"type": "rawscript", "language": "python3", "content": f"# {mid}",
                                 "input_transforms": inputs or {}}, **extra}


def ident(mid: str, **extra: Any) -> dict[str, Any]:
    return {"id": mid, "value": {"type": "identity"}, **extra}


def loop(mid: str, iterator: str, modules: list[dict[str, Any]], **value: Any) -> dict[str, Any]:
    extra = {k: value.pop(k) for k in list(value) if k in ("stop_after_if", "stop_after_all_iters_if",
                                                          "continue_on_error", "skip_if")}
    return {"id": mid, "value": {"type": "forloopflow", "iterator": js(iterator), "modules": modules,
                                 "skip_failures": value.pop("skip_failures", False), **value}, **extra}


def flow(*modules: dict[str, Any], **value: Any) -> dict[str, Any]:
    return {"summary": "test", "value": {"modules": list(modules), **value}}


class Failed(Exception):
    """Raised by a test step to fail its job."""


class Driver:
    """Runs one flow through the transition function."""

    def __init__(self, doc: dict[str, Any], args: dict[str, Any] | None = None,
                 steps: dict[str, Step] | None = None, *, lifo: bool = False) -> None:
        self.flow = parse_flow(doc)
        self.state = initial_state(FLOW_ID, args or {})
        self.steps = steps or {}
        self.lifo = lifo
        self.now = T0
        self.started: list[StartJob] = []
        self.pending: list[StartJob] = []
        self.canceled: list[str] = []
        self.awaits: list[AwaitResume] = []
        self.early: list[EarlyReturn] = []
        self.completed: FlowCompleted | None = None
        self.max_running = 0
        self.archive: list[FrameState] = []

    def send(self, event: Event) -> list[Action]:
        self.state, actions = advance(self.flow, self.state, event, now=self.now, evaluator=ENGINE)
        # As the store does: ended frames leave the state.
        self.archive.extend(self.state.archived)
        self.state.archived = []
        for action in actions:
            if isinstance(action, StartJob):
                self.started.append(action)
                self.pending.append(action)
            elif isinstance(action, CancelJobs):
                self.canceled.extend(action.jobs)
                self.pending = [p for p in self.pending if p.job not in action.jobs]
            elif isinstance(action, AwaitResume):
                self.awaits.append(action)
            elif isinstance(action, EarlyReturn):
                self.early.append(action)
            elif isinstance(action, FlowCompleted):
                assert self.completed is None, "a flow completes once"
                self.completed = action
        self.max_running = max(self.max_running, len(self.pending))
        return actions

    def start(self) -> Driver:
        self.send(Start())
        return self

    def answer(self, job: StartJob) -> list[Action]:
        """Run one pending job with its step function and send its completion."""
        self.pending.remove(job)
        self.now = max(self.now, job.scheduled_for)
        step = self.steps.get(job.module_id)
        try:
            result = step(job.args, job.attempt) if step else job.args
        except Failed as exc:
            return self.send(JobCompleted(job=job.job, success=False,
                                          error={"name": "Failed", "message": str(exc)}))
        return self.send(JobCompleted(job=job.job, success=True, result=result))

    def run(self, limit: int = 5000) -> Driver:
        """Start the flow and answer jobs until none is pending."""
        if not self.state.started:
            self.start()
        for _ in range(limit):
            if not self.pending:
                return self
            self.answer(self.pending[-1] if self.lifo else self.pending[0])
        raise AssertionError("the flow did not settle")

    def job_of(self, step: str) -> StartJob:
        return next(j for j in reversed(self.started) if j.step == step)

    @property
    def steps_started(self) -> list[str]:
        return [j.step for j in self.started]
