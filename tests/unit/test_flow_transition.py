"""The pure flow transition, from a table of flows: each module type, retries, skip and stop
conditions, sleeps, the failure module, loops (nested, empty, parallel, failing), branches,
suspends, early return, cancel. No Redis: tests/unit/flow_driver.py answers the step jobs."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from flows.state import FLOW_TIMEOUT, Cancel, FlowState, JobCompleted, Resumed, TimerFired
from flows.transition import advance, step_job_id
from tests.unit.flow_driver import (
    ENGINE,
    FLOW_ID,
    T0,
    Driver,
    Failed,
    flow,
    ident,
    js,
    loop,
    raw,
    static,
)


def fail(message: str = "boom") -> Callable[[dict[str, Any], int], Any]:
    def step(args: dict[str, Any], attempt: int) -> Any:
        raise Failed(message)
    return step


def fail_until(ok_attempt: int, value: Any = "ok") -> Callable[[dict[str, Any], int], Any]:
    def step(args: dict[str, Any], attempt: int) -> Any:
        if attempt < ok_attempt:
            raise Failed(f"attempt {attempt}")
        return value
    return step


def fail_if(pred: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any], int], Any]:
    def step(args: dict[str, Any], attempt: int) -> Any:
        if pred(args):
            raise Failed(f"bad {args}")
        return args
    return step


@dataclass
class Case:
    name: str
    doc: dict[str, Any]
    args: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, Callable[[dict[str, Any], int], Any]] = field(default_factory=dict)
    status: str = "success"
    result: Any = None
    error: str | None = None  # a substring of the flow error's message
    started: list[str] | None = None  # addresses of the step jobs started, in order
    check: Callable[[Driver], None] | None = None
    lifo: bool = False


def _sleep_check(d: Driver) -> None:
    assert d.job_of("b").scheduled_for == T0 + 5000


def _retry_check(d: Driver) -> None:
    a1, a2, a3 = (j for j in d.started if j.step == "a")
    assert [a1.attempt, a2.attempt, a3.attempt] == [1, 2, 3]
    assert len({a1.job, a2.job, a3.job}) == 3
    assert a2.scheduled_for - a1.scheduled_for == 2000 and a3.scheduled_for - a2.scheduled_for == 2000
    module = d.state.root.modules[0]
    assert module.attempts == 3 and module.failed_jobs == [a1.job, a2.job]


def _exp_check(d: Driver) -> None:
    times = [j.scheduled_for for j in d.started if j.step == "a"]
    assert [b - a for a, b in itertools.pairwise(times)] == [3 * 2 * 1000, 3 * 4 * 1000]


def _parallel_all(d: Driver) -> None:
    assert d.max_running == 3


def _parallelism_2(d: Driver) -> None:
    assert d.max_running == 2


def _sequential(d: Driver) -> None:
    assert d.max_running == 1


def _canceled_siblings(d: Driver) -> None:
    assert len(d.canceled) >= 1 and d.state.root.modules[0].status == "failure"


def _branch_chosen(index: int) -> Callable[[Driver], None]:
    def check(d: Driver) -> None:
        assert d.state.root.modules[0].branch_chosen == index
    return check


def _skipped(d: Driver) -> None:
    assert d.state.root.modules[0].skipped and d.state.root.modules[0].job is None


def _flow_skipped(d: Driver) -> None:
    assert d.state.skipped and d.state.stopped


def _step_fields(d: Driver) -> None:
    a, b, c = d.started
    assert (a.kind, a.script_path, a.script_hash, a.tag) == ("script", "u/ada/s", None, None)
    assert (b.kind, b.script_path, b.script_hash, b.tag) == ("script", "u/ada/s", "abc123", "gpu")
    assert (c.kind, c.flow_path) == ("flow", "f/team/sub")


def _timeout_priority(d: Driver) -> None:
    a, b = d.started
    assert (a.timeout_s, a.priority, b.timeout_s, b.priority) == (30, 7, None, 2)


def _bash(d: Driver) -> None:
    (a,) = d.started
    assert (a.language, a.content) == ("bash", 'echo "$1"')


def _early(d: Driver) -> None:
    assert [(e.step, e.result) for e in d.early] == [("a", {"n": 1})]


def _ids(d: Driver) -> None:
    for job in d.started:
        assert job.job == step_job_id(FLOW_ID, job.step, job.attempt)


def _holds(condition: bool) -> None:
    assert condition


ITEMS = "flow_input.items"

CASES = [
    Case("one rawscript, static and javascript inputs",
         flow(raw("a", {"x": js("flow_input.n * 2"), "y": static("k")})), {"n": 4},
         result={"x": 8, "y": "k"}, started=["a"], check=_ids),
    Case("a chain sees previous_result and results.<id>",
         flow(raw("a", {"v": js("flow_input.v")}), raw("b", {"p": js("previous_result.v"),
                                                              "r": js("results.a")})),
         {"v": 1}, result={"p": 1, "r": {"v": 1}}, started=["a", "b"]),
    Case("script by path, script pinned by hash, subflow by path",
         flow({"id": "a", "value": {"type": "script", "path": "u/ada/s", "input_transforms": {}}},
              {"id": "b", "value": {"type": "script", "path": "u/ada/s", "hash": "abc123",
                                    "tag_override": "gpu", "input_transforms": {}}},
              {"id": "c", "value": {"type": "flow", "path": "f/team/sub",
                                    "input_transforms": {"z": static(1)}}}),
         steps={"c": lambda a, t: "sub done"}, result="sub done", check=_step_fields),
    Case("a bash rawscript",
         flow({"id": "a", "value": {"type": "rawscript", "language": "bash", "content": 'echo "$1"',
                                    "input_transforms": {"x": static("hi")}}}),
         result={"x": "hi"}, check=_bash),
    Case("identity passes the previous result through",
         flow(raw("a", {"v": static(3)}), ident("b")), result={"v": 3}, started=["a"]),
    Case("an empty flow returns its input", flow(), {"q": 1}, result={"q": 1}, started=[]),
    Case("a template-string transform",
         flow(raw("a", {"s": js("`${flow_input.name}!`")})), {"name": "Ada"}, result={"s": "Ada!"}),
    Case("a bad expression fails the flow naming step, expression and reason",
         flow(raw("a", {"x": js("flow_input.nope.deeper")})), status="failure",
         error="step 'a (input x)': expression 'flow_input.nope.deeper' failed: TypeError", started=[]),
    Case("timeout and priority reach the step job",
         flow(raw("a", timeout=static(30), priority=7), raw("b"), priority=2), check=_timeout_priority),
    Case("constant retry: the third attempt succeeds, 2 s apart, each attempt its own job",
         flow(raw("a", retry={"constant": {"attempts": 3, "seconds": 2}})),
         steps={"a": fail_until(3)}, result="ok", check=_retry_check),
    Case("retries exhausted fail the flow",
         flow(raw("a", retry={"constant": {"attempts": 1, "seconds": 0}}), raw("b")),
         steps={"a": fail()}, status="failure", error="boom", started=["a", "a"]),
    Case("exponential retry waits multiplier * seconds ** n",
         flow(raw("a", retry={"exponential": {"attempts": 2, "multiplier": 3, "seconds": 2}})),
         steps={"a": fail_until(3)}, result="ok", check=_exp_check),
    Case("retry_if false: no retry",
         flow(raw("a", retry={"constant": {"attempts": 5, "seconds": 1},
                              "retry_if": {"expr": "error.message != 'fatal'"}})),
         steps={"a": fail("fatal")}, status="failure", error="fatal", started=["a"]),
    Case("skip_if: the step is an identity, no job",
         flow(raw("a", skip_if={"expr": "flow_input.skip"})), {"skip": True}, result={"skip": True},
         started=[], check=_skipped),
    Case("skip_if false runs the step",
         flow(raw("a", {"v": static(1)}, skip_if={"expr": "flow_input.skip"})), {"skip": False},
         result={"v": 1}, started=["a"]),
    Case("stop_after_if stops the flow with that step's result",
         flow(raw("a", {"v": static(0)}, stop_after_if={"expr": "result.v == 0"}), raw("b")),
         result={"v": 0}, started=["a"]),
    Case("stop_after_if with an error message fails the flow with it",
         flow(raw("a", stop_after_if={"expr": "true", "error_message": "no data"}), raw("b")),
         status="failure", error="no data", started=["a"]),
    Case("stop_after_if with an empty error message fails with the default message",
         flow(raw("a", stop_after_if={"expr": "1 < 2", "error_message": ""})),
         status="failure", error="Flow early stop: 1 < 2"),
    Case("stop_after_if skip_if_stopped marks the flow skipped",
         flow(raw("a", stop_after_if={"expr": "true", "skip_if_stopped": True}), raw("b")),
         started=["a"], result={}, check=_flow_skipped),
    Case("skip_expr ends the flow before step 0",
         flow(raw("a"), skip_expr="flow_input.off"), {"off": True}, result="stopped early", started=[]),
    Case("sleep delays the next step's job",
         flow(raw("a", sleep=static(5)), raw("b")), check=_sleep_check),
    Case("continue_on_error: the next step sees the error object",
         flow(raw("a", continue_on_error=True), raw("b", {"e": js("previous_result.error.message")})),
         steps={"a": fail("bad input")}, result={"e": "bad input"}),
    Case("failure module runs with the error and the flow still fails",
         flow(raw("a"), failure_module=raw("failure", {"e": js("previous_result.step_id")})),
         steps={"a": fail()}, status="failure", error="boom", started=["a", "!/failure"]),
    Case("failure module that recovers makes the flow a success",
         flow(raw("a"), failure_module=raw("failure", {"recover": static(True),
                                                       "why": js("previous_result.message")})),
         steps={"a": fail("x")}, result={"recover": True, "why": "x"}),
    Case("a failing failure module: the flow fails with the first error",
         flow(raw("a"), failure_module=raw("failure")), steps={"a": fail("first"), "failure": fail("second")},
         status="failure", error="first"),
    Case("sequential for-loop: one iteration at a time, results in order",
         flow(loop("l", ITEMS, [raw("c", {"x": js("flow_input.iter.value * 10"),
                                          "i": js("flow_input.iter.index")})])),
         {"items": [1, 2, 3]}, result=[{"x": 10, "i": 0}, {"x": 20, "i": 1}, {"x": 30, "i": 2}],
         started=["l/0/c", "l/1/c", "l/2/c"], check=_sequential),
    Case("parallel for-loop: all iterations at once, answered last first, results in index order",
         flow(loop("l", ITEMS, [raw("c", {"x": js("flow_input.iter.value")})], parallel=True)),
         {"items": [1, 2, 3]}, result=[{"x": 1}, {"x": 2}, {"x": 3}], check=_parallel_all, lifo=True),
    Case("parallelism 2: never more than 2 iterations running",
         flow(loop("l", ITEMS, [raw("c")], parallel=True, parallelism=static(2))),
         {"items": [1, 2, 3, 4, 5]}, check=_parallelism_2, result=[{}] * 5),
    Case("an empty iterator: no job, result []",
         flow(loop("l", ITEMS, [raw("c")]), raw("d", {"n": js("results.l.length")})), {"items": []},
         result={"n": 0}, started=["d"]),
    Case("an iterator that is not an array fails naming step and expression",
         flow(loop("l", "flow_input.items", [raw("c")])), {"items": {"a": 1}}, status="failure",
         error="step 'l': expression 'flow_input.items' failed: the iterator is dict, not an array"),
    Case("a failed parallel iteration without skip_failures fails the loop and cancels the rest",
         flow(loop("l", ITEMS, [raw("c", {"v": js("flow_input.iter.value")})], parallel=True)),
         {"items": [1, 2, 3]}, steps={"c": fail_if(lambda a: a["v"] == 1)}, status="failure",
         error="bad", check=_canceled_siblings),
    Case("a failed iteration with skip_failures yields null",
         flow(loop("l", ITEMS, [raw("c", {"v": js("flow_input.iter.value")})], skip_failures=True)),
         {"items": [1, 2, 3]}, steps={"c": fail_if(lambda a: a["v"] == 2)},
         result=[{"v": 1}, None, {"v": 3}]),
    Case("nested loops see iter and iter_parent",
         flow(loop("o", ITEMS, [loop("i", "flow_input.iter.value", [
             raw("c", {"o": js("flow_input.iter_parent.index"), "v": js("flow_input.iter.value")})])])),
         {"items": [["a", "b"], ["c"]]},
         result=[[{"o": 0, "v": "a"}, {"o": 0, "v": "b"}], [{"o": 1, "v": "c"}]],
         started=["o/0/i/0/c", "o/0/i/1/c", "o/1/i/0/c"]),
    Case("for-loop stop_after_if breaks after the iteration whose result matches",
         flow(loop("l", ITEMS, [raw("c", {"v": js("flow_input.iter.value")})],
                   stop_after_if={"expr": "result.v >= 2"})),
         {"items": [1, 2, 3, 4]}, result=[{"v": 1}, {"v": 2}], started=["l/0/c", "l/1/c"]),
    Case("stop_after_all_iters_if stops the flow after the loop",
         flow(loop("l", ITEMS, [ident("c")], stop_after_all_iters_if={"expr": "result.length == 2"}),
              raw("d")), {"items": [1, 2]}, result=[{"items": [1, 2]}, {"items": [1, 2]}], started=[]),
    Case("a loop of instant iterations does not deepen the stack",
         flow(loop("l", "Array.from({length: 3000}, (_, i) => i)", [ident("c")])), result=[{}] * 3000),
    Case("while loop runs until its stop_after_if, iter.index counts",
         flow({"id": "w", "value": {"type": "whileloopflow", "skip_failures": False,
                                    "modules": [raw("c", {"i": js("flow_input.iter.index")})]},
               "stop_after_if": {"expr": "result.i == 2"}}),
         result=[{"i": 0}, {"i": 1}, {"i": 2}], started=["w/0/c", "w/1/c", "w/2/c"]),
    Case("a while loop's stop_after_if sees the iteration's iter and results",
         flow({"id": "w", "value": {"type": "whileloopflow", "skip_failures": False,
                                    "modules": [raw("c", {"k": static(1)})]},
               "stop_after_if": {"expr": "flow_input.iter.index >= 1 && results.c.k == 1"}}),
         result=[{"k": 1}, {"k": 1}], started=["w/0/c", "w/1/c"]),
    Case("while loop with skip_failures goes on past a failed iteration",
         flow({"id": "w", "value": {"type": "whileloopflow", "skip_failures": True,
                                    "modules": [raw("c", {"i": js("flow_input.iter.index")})]},
               "stop_after_if": {"expr": "result !== null && result.i == 2"}}),
         steps={"c": fail_if(lambda a: a["i"] == 1)}, result=[{"i": 0}, None, {"i": 2}]),
    Case("branchone takes the first true branch",
         flow({"id": "d", "value": {"type": "branchone", "default": [ident("z")], "branches": [
             {"expr": "flow_input.n > 10", "modules": [raw("big", {"b": static(1)})]},
             {"expr": "flow_input.n > 1", "modules": [raw("mid", {"m": js("flow_input.n")})]},
             {"expr": "true", "modules": [raw("never")]}]}}),
         {"n": 5}, result={"m": 5}, started=["d/1/mid"], check=_branch_chosen(1)),
    Case("branchone default when no branch is true; an identity default passes the previous result",
         flow(raw("a", {"v": static(1)}), {"id": "d", "value": {"type": "branchone", "default": [ident("z")],
               "branches": [{"expr": "false", "modules": [raw("b")]}]}}),
         result={"v": 1}, started=["a"], check=lambda d: _holds(d.state.root.modules[1].branch_chosen == 1)),
    Case("branchone with an empty default passes the previous result",
         flow(raw("a", {"v": static(2)}), {"id": "d", "value": {"type": "branchone", "default": [],
               "branches": [{"expr": "previous_result.v == 3", "modules": [raw("b")]}]}}),
         result={"v": 2}, started=["a"]),
    Case("a branch predicate that throws fails the flow naming the branch",
         flow({"id": "d", "value": {"type": "branchone", "default": [],
                                    "branches": [{"expr": "x.y", "modules": []}]}}),
         status="failure", error="step 'd (branch 0)': expression 'x.y' failed: ReferenceError"),
    Case("branchall parallel: all branches at once, results in branch order",
         flow({"id": "p", "value": {"type": "branchall", "parallel": True, "branches": [
             {"modules": [raw("x", {"b": static(0)})]}, {"modules": [raw("y", {"b": static(1)})]},
             {"modules": [raw("z", {"b": static(2)})]}]}}),
         result=[{"b": 0}, {"b": 1}, {"b": 2}], check=_parallel_all, lifo=True),
    Case("branchall sequential: one branch after the other",
         flow({"id": "p", "value": {"type": "branchall", "branches": [
             {"modules": [raw("x")]}, {"modules": [raw("y")]}]}}),
         result=[{}, {}], started=["p/0/x", "p/1/y"], check=_sequential),
    Case("branchall: a failed branch without skip_failure fails it and cancels the others",
         flow({"id": "p", "value": {"type": "branchall", "parallel": True, "branches": [
             {"modules": [raw("x")]}, {"modules": [raw("y")]}, {"modules": [raw("z")]}]}}),
         steps={"x": fail("x broke")}, status="failure", error="x broke", check=_canceled_siblings),
    Case("branchall: a failed branch with skip_failure gives its error, the flow goes on",
         flow({"id": "p", "value": {"type": "branchall", "parallel": True, "branches": [
             {"modules": [raw("x")], "skip_failure": True}, {"modules": [raw("y", {"k": static(1)})]}]}}),
         steps={"x": fail("x broke")},
         check=lambda d: _holds(d.completed is not None and d.completed.result[1] == {"k": 1}
                                and d.completed.result[0]["error"]["message"] == "x broke")),
    Case("early_return answers once when its step is done; the flow goes on",
         flow(raw("a", {"n": static(1)}), raw("b", {"m": static(2)}), early_return="a"),
         result={"m": 2}, check=_early),
    Case("a mocked step starts no job",
         flow(raw("a", mock={"enabled": True, "return_value": [1, 2]}),
              raw("b", {"l": js("results.a.length")})),
         result={"l": 2}, started=["b"]),
    Case("continue_on_error on a loop whose iteration failed",
         flow(loop("l", ITEMS, [raw("c")], continue_on_error=True),
              raw("d", {"e": js("!!previous_result.error")})),
         {"items": [1]}, steps={"c": fail()}, result={"e": True}),
]




@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_flow_table(case: Case) -> None:
    """Each flow ends with the status, result or error and the jobs its case expects."""
    d = Driver(case.doc, case.args, case.steps, lifo=case.lifo).run()
    assert d.completed is not None, f"still running: {d.state.model_dump_json()[:400]}"
    assert d.completed.status == case.status, d.completed
    if (case.status == "success" and case.check is None) or case.result is not None:
        assert d.completed.result == case.result
    if case.error is not None:
        assert d.completed.error is not None and case.error in d.completed.error["message"]
    if case.started is not None:
        assert d.steps_started == case.started
    if case.check is not None:
        case.check(d)
    assert d.state.jobs == {} and d.pending == []


def test_table_has_forty_cases() -> None:
    """The issue asks for at least 40 cases in the table."""
    assert len(CASES) >= 40


# --- interleavings the table cannot express ---------------------------------------------------------


def test_duplicate_and_stale_events_change_nothing() -> None:
    """A completion delivered twice, or for an attempt that was retried, is ignored."""
    d = Driver(flow(raw("a", retry={"constant": {"attempts": 1, "seconds": 0}}), raw("b")),
               steps={"a": fail_until(2)}).start()
    first = d.pending[0]
    d.answer(first)  # fails: attempt 2 is started
    before = d.state.model_copy(deep=True)
    again, actions = advance(d.flow, d.state, JobCompleted(job=first.job, success=True, result=1),
                             now=T0, evaluator=ENGINE)
    assert actions == [] and again == before
    d.run()
    assert d.completed is not None and d.completed.status == "success"


def test_transition_leaves_its_input_untouched_and_replays_identically() -> None:
    """advance() is a function: the same state and event give the same state and actions."""
    d = Driver(flow(raw("a"), loop("l", "[1, 2]", [raw("c")], parallel=True))).start()
    event = JobCompleted(job=d.pending[0].job, success=True, result=[1])
    snapshot = d.state.model_dump()
    one = advance(d.flow, d.state, event, now=T0, evaluator=ENGINE)
    two = advance(d.flow, d.state, event, now=T0, evaluator=ENGINE)
    assert one == two and d.state.model_dump() == snapshot
    assert [a.step for a in one[1] if a.type == "start_job"] == ["l/0/c", "l/1/c"]


def test_state_survives_a_json_round_trip() -> None:
    """The state stored in Redis as JSON is the state the next transition reads."""
    d = Driver(flow(raw("a"), loop("l", "[1, 2]", [raw("c")], parallel=True))).start()
    d.answer(d.pending[0])
    again = FlowState.model_validate_json(d.state.model_dump_json())
    assert again == d.state
    d.state = again
    d.run()
    assert d.completed is not None and d.completed.result == [{}, {}]


def _suspend_flow(**suspend: Any) -> dict[str, Any]:
    return flow(raw("a", {"v": static(1)}, suspend={"required_events": 2, "timeout": 60, **suspend}),
                raw("b", {"r": js("resume"), "who": js("approvers"), "prev": js("previous_result")}))


def test_suspend_waits_for_the_required_approvals() -> None:
    """A suspended step holds the flow until N approvals; the next step sees resume and approvers."""
    d = Driver(_suspend_flow()).run()
    assert d.completed is None and d.steps_started == ["a"]
    (wait,) = d.awaits
    assert (wait.step, wait.required_events, wait.timeout_at) == ("a", 2, T0 + 60_000)
    d.send(Resumed(step="a", approver="u/ada", payload={"ok": 1}))
    assert d.steps_started == ["a"]
    d.send(Resumed(step="a", approver="u/bob", payload={"ok": 2}))
    d.send(TimerFired(key=wait.key))  # too late: ignored
    d.run()
    assert d.completed is not None and d.completed.result == {
        "r": {"ok": 2}, "who": ["u/ada", "u/bob"], "prev": {"v": 1}}


def test_suspend_disapproved_fails_the_flow() -> None:
    """A disapproval fails the step with SuspendedDisapproved."""
    d = Driver(_suspend_flow()).run()
    d.send(Resumed(step="a", approved=False, approver="u/ada"))
    assert d.completed is not None and d.completed.status == "failure"
    assert d.completed.error is not None and d.completed.error["name"] == "SuspendedDisapproved"


def test_suspend_timeout_continues_when_asked() -> None:
    """With continue_on_disapprove_timeout a timed-out suspend goes on with the error as result."""
    d = Driver(_suspend_flow(continue_on_disapprove_timeout=True)).run()
    d.send(TimerFired(key=d.awaits[0].key))
    d.run()
    assert d.completed is not None and d.completed.status == "success"
    assert d.completed.result["prev"]["error"]["name"] == "SuspendedTimedOut"


def test_cancel_cancels_running_steps_and_ignores_later_answers() -> None:
    """Cancel: running steps are canceled, pending ones never start, late answers change nothing."""
    d = Driver(flow(loop("l", "[1, 2, 3]", [raw("c")], parallel=True), raw("d"))).start()
    running = [j.job for j in d.pending]
    late = d.pending[0]
    d.send(Cancel(by="u/ada", reason="no longer needed"))
    assert sorted(d.canceled) == sorted(running) and d.pending == []
    assert d.completed is not None and d.completed.status == "canceled"
    _, actions = advance(d.flow, d.state, JobCompleted(job=late.job, success=True), now=T0, evaluator=ENGINE)
    assert actions == []


@pytest.mark.parametrize("where", ["a parallel loop", "a suspend", "the failure module"])
def test_the_flow_s_timeout_cancels_running_steps_and_fails_the_flow(where: str) -> None:
    """The flow job's timeout_s (timer FLOW_TIMEOUT): running steps are canceled, none other
    starts, the flow fails with a Timeout that says so; a late answer changes nothing."""
    docs = {
        "a parallel loop": flow(loop("l", "[1, 2, 3]", [raw("c")], parallel=True), raw("d")),
        "a suspend": _suspend_flow(),
        "the failure module": flow(raw("a"), failure_module=raw("failure")),
    }
    d = Driver(docs[where], steps={"a": fail()} if where == "the failure module" else {})
    d.state.timeout_s = 30
    d.start()
    if where == "a suspend":
        d.answer(d.pending[0])  # a done, now suspended
    elif where == "the failure module":
        d.answer(d.pending[0])  # a failed, the failure module runs
        assert d.steps_started == ["a", "!/failure"]
    running = [j.job for j in d.pending]
    late = d.pending[0] if d.pending else None
    started = list(d.steps_started)
    d.send(TimerFired(key=FLOW_TIMEOUT))
    assert sorted(d.canceled) == sorted(running) and d.pending == [] and d.steps_started == started
    assert d.completed is not None and d.completed.status == "failure"
    assert d.completed.error is not None and d.completed.error["name"] == "Timeout"
    assert "exceeded its timeout of 30 s" in d.completed.error["message"]
    if late is not None:
        _, actions = advance(d.flow, d.state, JobCompleted(job=late.job, success=True), now=T0,
                             evaluator=ENGINE)
        assert actions == []


def test_a_timeout_timer_after_the_flow_ended_is_ignored() -> None:
    """A flow that completed before its timeout takes the timer as nothing."""
    d = Driver(flow(raw("a"))).run()
    assert d.completed is not None and d.completed.status == "success"
    _, actions = advance(d.flow, d.state, TimerFired(key=FLOW_TIMEOUT), now=T0, evaluator=ENGINE)
    assert actions == []


def test_parallel_failure_is_seen_before_earlier_iterations_end() -> None:
    """A failed iteration fails a parallel loop at once, while earlier iterations still run."""
    d = Driver(flow(loop("l", "[0, 1, 2]", [raw("c", {"i": js("flow_input.iter.index")})], parallel=True)),
               steps={"c": fail_if(lambda a: a["i"] == 2)}).start()
    d.answer(d.job_of("l/2/c"))
    assert d.completed is not None and d.completed.status == "failure"
    assert sorted(d.canceled) == sorted([d.job_of("l/0/c").job, d.job_of("l/1/c").job])


@pytest.mark.parametrize(
    "event",
    [Resumed(step="zz"), Resumed(step="a/0/b"), Resumed(step="b"), Resumed(step=""), Resumed(step="!/x"),
     TimerFired(key="suspend:nope"), TimerFired(key="garbage"), JobCompleted(job="not-a-job", success=True)],
)
def test_events_for_nothing_the_flow_waits_for_are_ignored(
        event: Resumed | TimerFired | JobCompleted) -> None:
    """A resume for a wrong or unsuspended step, an unknown timer or job: no change, no error."""
    d = Driver(_suspend_flow()).run()  # step a suspended, b not reached
    _, actions = advance(d.flow, d.state, event, now=T0, evaluator=ENGINE)
    assert actions == []


def test_ended_iterations_leave_the_state() -> None:
    """Once taken into account, an iteration's frame is archived: the state keeps only live frames."""
    d = Driver(flow(loop("l", "Array.from({length: 50}, (_, i) => i)", [raw("c")], parallel=True,
                         parallelism=static(5)))).start()
    for _ in range(20):
        d.answer(d.pending[0])
    loop_state = d.state.root.modules[0]
    assert len(loop_state.frames) == 5 and loop_state.started == 25 and len(loop_state.outcomes) == 20
    d.run()
    assert sorted(f.addr for f in d.archive) == sorted(f"l/{i}" for i in range(50))
    assert d.state.root.modules[0].frames == [] and d.completed is not None
    assert len(d.completed.result) == 50


def test_a_loop_that_continues_on_error_still_cancels_its_running_iterations() -> None:
    """continue_on_error lets the flow go on; the failed loop's other iterations are canceled, not leaked."""
    d = Driver(flow(loop("l", "[0, 1, 2]", [raw("c", {"i": js("flow_input.iter.index")})], parallel=True,
                         continue_on_error=True), raw("d")),
               steps={"c": fail_if(lambda a: a["i"] == 0)}).start()
    d.answer(d.job_of("l/0/c"))
    assert sorted(d.canceled) == sorted([d.job_of("l/1/c").job, d.job_of("l/2/c").job])
    assert [j.step for j in d.pending] == ["d"]
    d.run()
    assert d.completed is not None and d.completed.status == "success" and d.state.jobs == {}


def test_suspend_names_who_may_approve() -> None:
    """user_groups_required is evaluated when the step suspends and travels with the wait."""
    doc = flow(raw("a", {"team": static("ops")}, suspend={
        "required_events": 1, "user_auth_required": True, "self_approval_disabled": True,
        "user_groups_required": js("[result.team, 'admins']")}))
    (wait,) = Driver(doc).run().awaits
    assert (wait.user_auth_required, wait.user_groups_required, wait.self_approval_disabled) == (
        True, ["ops", "admins"], True)
