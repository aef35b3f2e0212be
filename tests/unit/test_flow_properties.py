"""Properties of the pure transition over generated flows: whatever the shape, the step outcomes,
the order of completions and duplicated deliveries, a flow ends, names each job once, leaves no
job behind, and ignores copies of events it already applied."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.state import JobCompleted
from flows.transition import advance
from tests.unit.flow_driver import ENGINE, Driver, flow, ident, js, raw, static

_ids = iter(range(10**9))


def _mid() -> str:
    return f"m{next(_ids)}"


def _leaf(draw: st.DrawFn) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["retry"] = {"constant": {"attempts": draw(st.integers(0, 2)), "seconds": 0}}
    if draw(st.booleans()):
        extra["continue_on_error"] = True
    return raw(_mid(), {"i": js("flow_input.iter ? flow_input.iter.index : -1")}, **extra)


@st.composite
def modules(draw: st.DrawFn, depth: int = 0) -> list[dict[str, Any]]:
    """A list of 0-3 modules, containers nested up to depth 2."""
    out: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0 if depth else 1, 3))):
        kind = draw(st.sampled_from(["leaf", "leaf", "identity"] if depth >= 2 else
                                    ["leaf", "leaf", "identity", "for", "while", "one", "all"]))
        mid = _mid()
        if kind == "leaf":
            out.append(_leaf(draw))
        elif kind == "identity":
            out.append(ident(mid))
        elif kind == "for":
            out.append({"id": mid, "value": {
                "type": "forloopflow", "iterator": static(list(range(draw(st.integers(0, 3))))),
                "skip_failures": draw(st.booleans()), "parallel": draw(st.booleans()),
                "parallelism": static(draw(st.integers(0, 2))), "modules": draw(modules(depth + 1))}})
        elif kind == "while":
            out.append({"id": mid, "value": {"type": "whileloopflow", "skip_failures": draw(st.booleans()),
                                             "modules": draw(modules(depth + 1))},
                        "stop_after_if": {"expr": f"flow_input.iter.index >= {draw(st.integers(0, 2))}"}})
        elif kind == "one":
            out.append({"id": mid, "value": {"type": "branchone", "default": draw(modules(depth + 1)),
                                             "branches": [{"expr": draw(st.sampled_from(["true", "false"])),
                                                           "modules": draw(modules(depth + 1))}]}})
        else:
            out.append({"id": mid, "value": {"type": "branchall", "parallel": draw(st.booleans()),
                                             "branches": [{"skip_failure": draw(st.booleans()),
                                                           "modules": draw(modules(depth + 1))}
                                                          for _ in range(draw(st.integers(1, 2)))]}})
        if kind not in ("leaf", "identity") and draw(st.booleans()):
            out[-1]["continue_on_error"] = True
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=modules(), data=st.data(), with_failure_module=st.booleans())
def test_any_flow_ends_cleanly_whatever_the_order_and_copies(body: list[dict[str, Any]], data: st.DataObject,
                                                             with_failure_module: bool) -> None:
    """Ends; each job named once; none left running; a copy of an applied event changes nothing."""
    extra = {"failure_module": raw("fm")} if with_failure_module else {}
    d = Driver(flow(*body, **extra)).start()
    answered: list[JobCompleted] = []
    for _ in range(500):
        if not d.pending or d.completed is not None:
            break
        job = d.pending[data.draw(st.integers(0, len(d.pending) - 1), label="which")]
        ok = data.draw(st.booleans(), label="succeeds")
        event = JobCompleted(job=job.job, success=ok, result=job.args if ok else None,
                             error=None if ok else {"name": "Failed", "message": "drawn"})
        d.pending.remove(job)
        d.send(event)
        answered.append(event)
        if data.draw(st.booleans(), label="copy"):
            copy = answered[data.draw(st.integers(0, len(answered) - 1), label="which copy")]
            before = d.state.model_dump()
            again, actions = advance(d.flow, d.state, copy, now=d.now, evaluator=ENGINE)
            assert actions == [] and again.model_dump() == before
    assert d.completed is not None, "the flow did not end"
    assert d.completed.status in ("success", "failure")
    ids = [j.job for j in d.started]
    assert len(ids) == len(set(ids)), "a job id was started twice"
    assert d.pending == [] and d.state.jobs == {}
