"""Flows end to end: a real scheduler (advancer) and real workers (steps in the sandbox)."""

from __future__ import annotations

from typing import Any

import pytest

from gristmill.client import Gristmill
from tests.e2e.conftest import RunningFleet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WAIT_S = 90.0

# The reference's example (../shared/reference/openflow.md): 3 steps, a parallel for-loop, a branch.
REFERENCE: dict[str, Any] = {
    "summary": "fetch, fan out, route",
    "value": {"modules": [
        {"id": "a", "value": {"type": "rawscript", "language": "python3",
                              "content": "def main(n: int):\n    return list(range(n))",
                              "input_transforms": {"n": {"type": "javascript", "expr": "flow_input.n"}}}},
        {"id": "b", "value": {
            "type": "forloopflow", "skip_failures": False, "parallel": True,
            "parallelism": {"type": "static", "value": 4},
            "iterator": {"type": "javascript", "expr": "results.a"},
            "modules": [{"id": "c", "value": {
                "type": "rawscript", "language": "python3",
                "content": "def main(x: int):\n    return x * x",
                "input_transforms": {"x": {"type": "javascript", "expr": "flow_input.iter.value"}}},
                "retry": {"constant": {"attempts": 2, "seconds": 1}}}]}},
        {"id": "d", "value": {
            "type": "branchone",
            "branches": [{"summary": "big", "expr": "results.b.reduce((s, v) => s + v, 0) > 100",
                          "modules": [{"id": "e", "value": {
                              "type": "rawscript", "language": "python3",
                              "content": "def main(total: list):\n    return {'big': sum(total)}",
                              "input_transforms": {"total": {"type": "javascript",
                                                             "expr": "results.b"}}}}]}],
            "default": [{"id": "f", "value": {"type": "identity"}}]},
         "stop_after_if": {"expr": "result == null", "skip_if_stopped": True}}],
        "failure_module": {"id": "failure", "value": {
            "type": "rawscript", "language": "python3",
            "content": "def main(error: dict):\n    return {'recover': False, 'seen': error}",
            "input_transforms": {"error": {"type": "javascript", "expr": "previous_result"}}}},
        "same_worker": False},
    "schema": {"type": "object", "properties": {"n": {"type": "integer", "default": 5}}, "required": ["n"]},
}


def test_reference_flow_runs_loop_and_both_branches(fleet_up: RunningFleet, gm: Gristmill) -> None:
    """The reference flow: a parallel loop of squares, then the default branch (n=5) or the big one (n=8)."""
    small = gm.submit({"flow": REFERENCE, "args": {"n": 5}})
    big = gm.submit({"flow": REFERENCE, "args": {"n": 8}})
    done = gm.wait(small, WAIT_S)
    assert done.status == "success", done.error
    assert done.kind == "flowpreview"
    assert done.result == [0, 1, 4, 9, 16]
    done = gm.wait(big, WAIT_S)
    assert done.status == "success", done.error
    assert done.result == {"big": 140}
    steps = gm.flow_steps(big)
    assert [s.label for s in steps if s.depth == 0] == ["a", "b", "d"]
    iterations = [s for s in steps if s.label.startswith("iteration")]
    assert len(iterations) == 8 and all(s.status == "success" for s in iterations)
    branch = next(s for s in steps if s.label == "d")
    assert branch.branch_chosen == 0
    step_jobs = [gm.get_job(s.job) for s in steps if s.job]
    assert {j.parent_job for j in step_jobs} == {big}
    assert all(j.root_job == big and j.status == "success" for j in step_jobs)
    assert {j.flow_step_id for j in step_jobs} == {"a", "c", "e"}
