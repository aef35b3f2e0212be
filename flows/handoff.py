"""A finished step's way from its own slot to its flow's (docs/ARCHITECTURE.md, "Flows").

The step's completion records its outcome in the step group's ``flownotify``
(``complete.lua``, same script, same slot); :func:`forward` moves each outcome
to its flow's events and only then removes it, so an outcome is delivered at
least once and a copy is ignored by the transition. When the step is in its
flow's own group (the same slot), both are one script (``flow_forward.lua``):
one round trip fewer, and delivered exactly once. This module is light (no
JavaScript engine), so workers import it to forward right after completing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

from common.connection import redis_errors
from common.keys import Keys
from common.luascripts import LuaScript, run_pipeline
from common.models import Job, Status
from flows.state import Event, JobCompleted


def _script(name: str) -> LuaScript:
    return LuaScript(name, resources.files("flows").joinpath("lua", f"{name}.lua").read_text())


FLOW_EVENT = _script("flow_event")
FLOW_FORWARD = _script("flow_forward")
POP_IF_HEAD = _script("pop_if_head")


@dataclass(frozen=True)
class StepOutcome:
    """A finished step job, on its way from its own slot to its flow's."""

    flow_group: str
    flow_id: str
    job: str
    success: bool
    result: Any = None
    error: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps({"g": self.flow_group, "f": self.flow_id, "j": self.job, "s": self.success,
                           "r": self.result, "e": self.error}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> StepOutcome:
        data = json.loads(text)
        return cls(data["g"], data["f"], data["j"], data["s"], data.get("r"), data.get("e"))

    @classmethod
    def of(cls, job: Job, status: Status | str, result: Any = None,
           error: dict[str, Any] | None = None) -> StepOutcome | None:
        """The outcome of a flow's step job completed with ``status``; None for a job of no flow."""
        if not job.flow_group or not job.parent_job:
            return None
        if status == Status.CANCELED and error is None:
            error = {"name": "Canceled", "message": f"step job {job.id} was canceled"}
        return cls(job.flow_group, job.parent_job, job.id, status == Status.SUCCESS,
                   result if status == Status.SUCCESS else None, error)

    def event(self) -> JobCompleted:
        return JobCompleted(job=self.job, success=self.success, result=self.result, error=self.error)


def flow_event_keys(keys: Keys, group: str, flow_id: str) -> list[str]:
    g = keys.group(group)
    return [g.flow(flow_id), g.flow_events(flow_id), g.flow_queue]


@redis_errors
def send(client: redis.Redis, keys: Keys, group: str, flow_id: str, event: Event) -> bool:
    """Queue an event for a flow; False when there is no such flow."""
    return bool(FLOW_EVENT(client, flow_event_keys(keys, group, flow_id), [flow_id, event.model_dump_json()]))


@redis_errors
def forward(client: redis.Redis, keys: Keys, step_group: str, limit: int = 100) -> int:
    """Hand the step outcomes recorded in ``step_group`` to their flows; how many moved.

    Each outcome is pushed to its flow first and removed here after, so a
    forwarder that dies in between pushes it again: the flow ignores the copy.
    """
    notify = keys.group(step_group).flow_notify
    heads = client.lrange(notify, 0, limit - 1)
    if not heads:
        return 0
    outcomes = [StepOutcome.from_json(head) for head in heads]
    if all(outcome.flow_group == step_group for outcome in outcomes):  # one slot: one script
        g = keys.group(step_group)
        script_keys, args = [notify, g.flow_queue], []
        for head, outcome in zip(heads, outcomes, strict=True):
            script_keys += [g.flow(outcome.flow_id), g.flow_events(outcome.flow_id)]
            args += [head, outcome.flow_id, outcome.event().model_dump_json()]
        return int(FLOW_FORWARD(client, script_keys, args))
    pipe = client.pipeline(transaction=False)
    for outcome in outcomes:
        FLOW_EVENT.queue(pipe, flow_event_keys(keys, outcome.flow_group, outcome.flow_id),
                         [outcome.flow_id, outcome.event().model_dump_json()])
    run_pipeline(client, pipe, (FLOW_EVENT,))  # also on a cluster, NOSCRIPT re-sends all
    return int(POP_IF_HEAD(client, [notify], heads))
