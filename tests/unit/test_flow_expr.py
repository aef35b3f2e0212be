"""The expression engine: JavaScript semantics, the fast path answering exactly as V8 does, the
sandbox (no I/O, frozen built-ins, time and memory limits) and errors that name step,
expression and reason."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flows.errors import ExpressionError
from flows.expr import _NUMBER_PROTO, _OBJECT_PROTO, DEFER, JsEngine, fast_path, js_normalize, js_truthy


@pytest.fixture(scope="module")
def engine() -> Iterator[JsEngine]:
    e = JsEngine(timeout_s=0.5, max_memory=32 * 1024 * 1024)
    yield e
    e.close()


@pytest.fixture(scope="module")
def slow() -> Iterator[JsEngine]:
    """The same engine without the fast path: every expression goes to V8."""
    e = JsEngine(fast=False)
    yield e
    e.close()


CTX: dict[str, Any] = {
    "flow_input": {"n": 3, "f": 2.0, "big": 2**60, "neg": -0.0, "s": "", "list": [1, 2.5, {"x": None}],
                   "iter": {"index": 1, "value": "b"}, "nested": {"a": {"b": [10, 20]}}, "huge": 1e300},
    "results": {"a": [1, 2, 3], "b": {"items": ["x", "y"]}, "c": None},
    "previous_result": {"ok": True},
    "resume": None, "resumes": [], "approvers": ["u/ada"],
}

PATHS = [
    "flow_input.n", "flow_input.f", "flow_input.big", "flow_input.neg", "flow_input.s", "flow_input.list",
    "flow_input.list[2]", "flow_input.list[2].x", "flow_input.iter.value", "flow_input.iter.index",
    "flow_input.nested.a.b[1]", "flow_input.huge", "results.a", "results.b.items", "results.c",
    "previous_result", "previous_result.ok", "approvers", "approvers[0]", "resume", "flow_input",
    "results.a.length", "results.b.items.length", "flow_input.missing", "flow_input.list[9]",
    "flow_input.constructor", " results.a ", "flow_input.n.x", "flow_input.n.toFixed",
    "previous_result.ok.x", "flow_input.__proto__",
    # ?? between plain paths: the first that is neither null nor undefined
    "previous_result.x ?? previous_result", "results.c ?? flow_input.n", "flow_input.missing ?? results.c",
    "flow_input.n ?? nope", "flow_input.s ?? flow_input.n", "flow_input.list[9] ?? flow_input.list[1]",
    "results.c ?? flow_input.missing ?? flow_input.f", "results.a.length ?? 1",
]


@pytest.mark.parametrize("expr", PATHS)
def test_fast_path_answers_as_v8_does(expr: str, engine: JsEngine, slow: JsEngine) -> None:
    """A plain property path gives the same value (and type) with and without the fast path."""
    fast = engine.evaluate(expr, CTX, step="s")
    full = slow.evaluate(expr, CTX, step="s")
    assert fast == full and type(fast) is type(full)
    assert engine.truthy(expr, CTX, step="s") == slow.truthy(expr, CTX, step="s")


@pytest.mark.parametrize("previous", [7, 2.5, 0, True, False, None, "s", [1], {"x": 0}, {"x": None}, {}])
@pytest.mark.parametrize("expr", ["previous_result.x ?? previous_result", "previous_result.x",
                                  "previous_result.x ?? previous_result.y ?? 5"])
def test_coalescing_answers_as_v8_does(expr: str, previous: Any, engine: JsEngine, slow: JsEngine) -> None:
    """``??`` over a step's previous result of any JSON type (the idiom of a chain of steps)."""
    ctx = {**CTX, "previous_result": previous}
    try:
        full = slow.evaluate(expr, ctx, step="s")
    except ExpressionError as exc:
        with pytest.raises(ExpressionError) as raised:
            engine.evaluate(expr, ctx, step="s")
        assert str(raised.value) == str(exc)
        return
    fast = engine.evaluate(expr, ctx, step="s")
    assert fast == full and type(fast) is type(full)


def test_the_fast_path_defers_what_it_cannot_answer() -> None:
    """.length, prototype members, calls, steps on undefined or null and unknown names go to V8
    (DEFER, never a value)."""
    for expr in ("results.a.length", "nope", "results.a[0] + 1", "flow_input.constructor",
                 "results.a.map(String)", "flow_input.iter['value']", "flow_input.n.toFixed",
                 "flow_input.missing.x", "results.c.x", "flow_input.s.x", "results.c ?? nope",
                 "flow_input.missing ?? results.a.length", "flow_input.n || 1", "flow_input.__proto__",
                 "nope ?? flow_input.n"):
        assert fast_path(expr, CTX) is DEFER, expr
    assert fast_path("results.b.items[1]", CTX) == "y"
    assert fast_path("results.a[3]", CTX) is None  # past the end: undefined, null as JSON
    assert fast_path("flow_input.missing ?? results.a[1]", CTX) == 2
    assert fast_path("flow_input.n ?? nope", CTX) == 3  # the right side is never looked at


def test_the_prototype_names_are_v8s(slow: JsEngine) -> None:
    """Every name a missing key can still find on a frozen prototype is one the fast path defers."""
    names = slow.evaluate("[Object, Number, Boolean].flatMap((c) => Object.getOwnPropertyNames(c.prototype))",
                          {}, step="s")
    objects = slow.evaluate("Object.getOwnPropertyNames(Object.prototype)", {}, step="s")
    assert set(objects) <= _OBJECT_PROTO
    assert set(names) <= _NUMBER_PROTO


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("results.a.reduce((s, v) => s + v, 0)", 6),
        ("`${flow_input.iter.value}!`", "b!"),
        ("flow_input.n > 2 ? 'big' : 'small'", "big"),
        ("results.b.items.map(x => x.toUpperCase())", ["X", "Y"]),
        ("({k: flow_input.n, u: undefined})", {"k": 3}),
        ("undefined", None),
        ("0.1 + 0.2", 0.30000000000000004),
        ("1 / 0", None),
        ("[...results.a].reverse()", [3, 2, 1]),
        ("const t = results.a.length;\nreturn t * 2", 6),
        ("// a comment\nflow_input.n", 3),
    ],
)
def test_javascript_semantics(expr: str, value: Any, engine: JsEngine) -> None:
    """Expressions are real JavaScript, including function bodies with return."""
    assert engine.evaluate(expr, CTX, step="s") == value


@pytest.mark.parametrize(
    ("expr", "truth"),
    [("[]", True), ("{}", True), ("''", False), ("0", False), ("'0'", True), ("null", False),
     ("NaN", False), ("results.c", False), ("results.a", True), ("flow_input.s", False),
     ("() => 1", True), ("flow_input.neg", False)],
)
def test_truthiness_is_javascripts(expr: str, truth: bool, engine: JsEngine) -> None:
    """Branch, skip and stop conditions use Boolean(), not Python's truth."""
    assert engine.truthy(expr, CTX, step="s") is truth


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("flow_input.missing.deeper", "TypeError: Cannot read properties of undefined"),
        ("nope + 1", "ReferenceError: nope is not defined"),
        ("results.a.(", "SyntaxError"),
        ("require('fs')", "ReferenceError: require is not defined"),
        ("process.env", "ReferenceError: process is not defined"),
        ("fetch('http://127.0.0.1')", "ReferenceError: fetch is not defined"),
        ("Object.prototype.polluted = 1", "object is not extensible"),
        ("globalThis.leak = 1", "object is not extensible"),
        ("Array.prototype.map = null", "read only"),
        ("(() => { throw new Error('custom') })()", "Error: custom"),
        ("BigInt(1)", "BigInt"),
    ],
)
def test_errors_name_step_expression_and_reason(expr: str, reason: str, engine: JsEngine) -> None:
    """A bad expression raises ExpressionError with the step, the expression and V8's reason."""
    with pytest.raises(ExpressionError) as caught:
        engine.evaluate(expr, CTX, step="b/2/c")
    assert caught.value.step == "b/2/c" and caught.value.expr == expr
    assert reason in caught.value.reason
    assert f"step 'b/2/c': expression {expr!r} failed: " in str(caught.value)


def test_an_expression_cannot_change_what_the_next_one_sees(engine: JsEngine) -> None:
    """State does not leak between evaluations: names, prototypes and the context are fresh."""
    with pytest.raises(ExpressionError):
        engine.evaluate("(() => { Array.prototype.sum = 1 })()", CTX, step="s")
    probe = "(() => { var x = 1; return typeof Array.prototype.sum })()"
    assert engine.evaluate(probe, CTX, step="s") == "undefined"
    engine.evaluate("(() => { results.a.push(99); return 1 })()", CTX, step="s")
    assert engine.evaluate("results.a.length + 0", CTX, step="s") == 3
    assert CTX["results"]["a"] == [1, 2, 3]


def test_time_limit_interrupts_and_the_engine_recovers(engine: JsEngine) -> None:
    """An endless loop is stopped at the time limit; the next expression works."""
    with pytest.raises(ExpressionError, match=r"took longer than 0.5 s"):
        engine.evaluate("(() => { while (true) {} })()", CTX, step="s")
    assert engine.evaluate("1 + 1", CTX, step="s") == 2


def test_memory_limit_interrupts_and_the_engine_recovers(engine: JsEngine) -> None:
    """A runaway allocation is stopped (by the heap limit, or the clock); the next one works."""
    with pytest.raises(ExpressionError, match=r"MiB of memory|took longer"):
        engine.evaluate("(() => { const a = []; while (true) a.push(new Array(1e6).fill(1)) })()", CTX,
                        step="s")
    assert engine.evaluate("results.a.length", CTX, step="s") == 3


def test_a_context_that_is_not_json_is_an_error(engine: JsEngine) -> None:
    """Only JSON goes into the isolate."""
    with pytest.raises(ExpressionError, match="not JSON"):
        engine.evaluate("x.y + 1", {"x": {"y": object()}}, step="s")


@pytest.mark.parametrize(
    ("value", "normal"),
    [(1.0, 1), (-0.0, 0), (2**60, 1152921504606847000), (1e21, 1e21), (float("nan"), None),
     (1.5, 1.5), ([1.0, {"a": 2.0}], [1, {"a": 2}]), (True, True), (123456789012345680000.0,
                                                                    123456789012345680000)],
)
def test_js_normalize(value: Any, normal: Any) -> None:
    """What a JSON round trip through JavaScript does to a value."""
    got = js_normalize(value)
    assert got == normal and type(got) is type(normal)


def test_js_truthy_table() -> None:
    """JavaScript's falsy values, and nothing else."""
    assert [js_truthy(v) for v in (None, False, 0, 0.0, "", [], {}, "0", 1, True)] == [
        False, False, False, False, False, True, True, True, True, True]
