"""Flow expressions: JavaScript, as in Windmill, evaluated in an embedded V8 (mini-racer).

An expression sees the names of its context as variables: ``flow_input`` (with
``iter = {index, value}`` inside loops), ``results`` (``results.<id>``),
``previous_result``, ``resume``, ``resumes``, ``approvers``, and ``result`` /
``all_iters`` in stop conditions. It is compiled as ``return (<expr>)``; a
text that is not one expression but contains ``return`` is compiled as a
function body, so multi-line transforms work too.

The sandbox: the V8 isolate has no ``require``, no I/O, no network, no timers
that outlive an evaluation; the built-in objects and the global object are
frozen once at start, so one expression cannot change what the next sees;
each evaluation has a time limit, and the isolate a hard memory limit. An
isolate that hit either limit is thrown away and a fresh one made.

The fast path: a plain property path (``flow_input.x``, ``results.a.items[0]``),
or plain paths joined by ``??`` (``previous_result.x ?? previous_result``), is
resolved in Python when every step is known: an own key of an object, an index
of an array, or a last step that finds nothing (undefined: a missing key that
no frozen prototype can answer, an index past the end). The value is
normalised the way a round trip through JavaScript would change it (integral
floats become ints, NaN becomes null...); anything else goes to V8, so both
paths answer the same. It saves the call into V8's thread, the largest part
of a step's hand-off when the expression needs none (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import atexit
import decimal
import json
import math
import re
import threading
import weakref
from collections.abc import Mapping
from typing import Any, Protocol

from py_mini_racer import JSEvalException, JSOOMException, JSTimeoutException, MiniRacer

from flows.errors import ExpressionError

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_MAX_MEMORY = 64 * 1024 * 1024
_MAX_SAFE_INT = 2**53

# Installed once per isolate. The compiled functions are cached by their text and
# parameter names; each evaluation answers a JSON text {"v": value} or {"e": reason}.
_BOOTSTRAP = r"""
(() => {
  "use strict";
  const cache = new Map();
  const compile = (src, names) => {
    const key = names.join(",") + "\u0000" + src;
    let fn = cache.get(key);
    if (fn === undefined) {
      try {
        fn = new Function(...names, '"use strict";\nreturn (' + src + "\n);");
      } catch (err) {
        if (!(err instanceof SyntaxError) || !/\breturn\b/.test(src)) throw err;
        fn = new Function(...names, '"use strict";\n' + src);
      }
      if (cache.size >= 1000) cache.clear();
      cache.set(key, fn);
    }
    return fn;
  };
  const run = (src, ctx, asBool) => {
    try {
      const names = Object.keys(ctx);
      let value = compile(src, names)(...names.map((n) => ctx[n]));
      if (asBool) value = Boolean(value);
      // What JSON.stringify would leave out (undefined, functions, symbols) is null.
      const kind = typeof value;
      const json = kind === "undefined" || kind === "function" || kind === "symbol" ? null : value;
      return JSON.stringify({ v: json });
    } catch (err) {
      return JSON.stringify({ e: String(err) });
    }
  };
  Object.defineProperty(globalThis, "__gm_run", { value: run });
  delete globalThis.WebAssembly;
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    const v = globalThis[name];
    if (v !== null && (typeof v === "object" || typeof v === "function")) {
      Object.freeze(v);
      if (v.prototype) Object.freeze(v.prototype);
    }
  }
  Object.freeze(globalThis);
})();
"""

_PATH = re.compile(r"\s*([A-Za-z_$][\w$]*)((?:\.[A-Za-z_$][\w$]*|\[\d+\])*)\s*")
_SEGMENT = re.compile(r"\.([A-Za-z_$][\w$]*)|\[(\d+)\]")


class Evaluator(Protocol):
    """What the transition function needs: evaluate an expression, or its truth."""

    def evaluate(self, expr: str, context: Mapping[str, Any], *, step: str) -> Any: ...

    def truthy(self, expr: str, context: Mapping[str, Any], *, step: str) -> bool: ...


def js_normalize(value: Any) -> Any:
    """``value`` as JSON.parse(JSON.stringify(value)) in JavaScript would give it back to Python."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
            return value
        try:
            return js_normalize(float(value))
        except OverflowError:
            return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer() and abs(value) < 1e21:
            # JavaScript prints the shortest round-trip digits, zero-padded: so does repr.
            return int(decimal.Decimal(repr(value)))
        return value
    if isinstance(value, list | tuple):
        return [js_normalize(item) for item in value]
    if isinstance(value, dict):
        return {str(key): js_normalize(item) for key, item in value.items()}
    raise TypeError(f"{type(value).__name__} is not JSON")


def js_truthy(value: Any) -> bool:
    """JavaScript's Boolean() of a JSON value."""
    if value is None or value is False:
        return False
    if isinstance(value, bool):
        return True
    if isinstance(value, int | float):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


DEFER = object()  # fast_path: "not a plain path whose every step exists; ask V8"
_UNDEFINED = object()  # a path's last step found nothing: JavaScript's undefined

# What a missing key of an object, a number or a boolean may still find on its prototype
# (Object.prototype, Number.prototype, Boolean.prototype; a test checks these against V8):
# such a name goes to V8, any other missing name is undefined.
_OBJECT_PROTO = frozenset({
    "constructor", "__defineGetter__", "__defineSetter__", "hasOwnProperty", "__lookupGetter__",
    "__lookupSetter__", "isPrototypeOf", "propertyIsEnumerable", "toString", "valueOf", "__proto__",
    "toLocaleString"})
_NUMBER_PROTO = _OBJECT_PROTO | {"toExponential", "toFixed", "toPrecision"}
_COALESCE = re.compile(r"\?\?")


def _resolve(expr: str, context: Mapping[str, Any]) -> Any:
    """A plain property path's value, ``_UNDEFINED`` when its last step finds nothing (a missing
    own key that no prototype can answer, an index past an array's end), else ``DEFER``."""
    match = _PATH.fullmatch(expr)
    if match is None or match.group(1) not in context:
        return DEFER
    value = context[match.group(1)]
    for name, index in _SEGMENT.findall(match.group(2)):
        if value is _UNDEFINED or name == "__proto__":
            return DEFER  # a step on undefined is a TypeError: V8 words it
        if name and isinstance(value, dict):
            value = value.get(name, DEFER if name in _OBJECT_PROTO else _UNDEFINED)
        elif name and isinstance(value, int | float):  # a bool too (Boolean.prototype is smaller)
            value = DEFER if name in _NUMBER_PROTO else _UNDEFINED
        elif index and isinstance(value, list):
            value = value[int(index)] if int(index) < len(value) else _UNDEFINED
        else:
            return DEFER  # null, strings, an array's .length and friends: V8 knows the answer
        if value is DEFER:
            return DEFER
    return value


def fast_path(expr: str, context: Mapping[str, Any]) -> Any:
    """The value of a plain property path, or of plain paths joined by ``??`` (the first that
    is neither null nor undefined), when each step is known without V8; else ``DEFER``."""
    value: Any = None
    for operand in _COALESCE.split(expr) if "??" in expr else (expr,):
        value = _resolve(operand, context)
        if value is DEFER:
            return DEFER
        if value is not None and value is not _UNDEFINED:
            return js_normalize(value)
    return None  # null or undefined: JSON has only null


_LIVE: weakref.WeakSet[JsEngine] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # An isolate left open keeps the interpreter from exiting; engines are not kept alive for it.
    for engine in list(_LIVE):
        engine.close()


class JsEngine:
    """A sandboxed V8 isolate for flow expressions; safe to share between threads."""

    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S, max_memory: int = DEFAULT_MAX_MEMORY,
                 fast: bool = True) -> None:
        self.timeout_s = timeout_s
        self.max_memory = max_memory
        self.fast = fast
        self._lock = threading.Lock()
        self._racer: MiniRacer | None = None
        # Isolates interrupted by a limit: V8 still answers the interrupted call a little later,
        # and closing before that answer arrives makes mini-racer report it on a closed loop.
        self._retired: list[MiniRacer] = []
        _LIVE.add(self)

    def close(self) -> None:
        """Free the isolate (a new one is made on the next evaluation)."""
        with self._lock:
            for racer in self._retired:
                racer.close()
            self._retired.clear()
            if self._racer is not None:
                self._racer.close()
                self._racer = None

    def _discard(self) -> None:
        # The isolate may hold the garbage of the interrupted call; start afresh. It must be
        # closed some time, or the interpreter cannot exit; the oldest retired one is safe to.
        if self._racer is not None:
            self._retired.append(self._racer)
            self._racer = None
        if len(self._retired) > 2:
            self._retired.pop(0).close()

    def _isolate(self) -> MiniRacer:
        if self._racer is None:
            racer = MiniRacer()
            racer.set_hard_memory_limit(self.max_memory)
            racer.eval(_BOOTSTRAP)
            self._racer = racer
        return self._racer

    def evaluate(self, expr: str, context: Mapping[str, Any], *, step: str) -> Any:
        """The JSON value of ``expr`` in ``context``; ExpressionError naming step, expression, reason."""
        if self.fast:
            value = fast_path(expr, context)
            if value is not DEFER:
                return value
        return self._run(expr, context, step, as_bool=False)

    def truthy(self, expr: str, context: Mapping[str, Any], *, step: str) -> bool:
        """``Boolean(expr)``, as Windmill evaluates branch, skip and stop conditions."""
        if self.fast:
            value = fast_path(expr, context)
            if value is not DEFER:
                return js_truthy(value)
        return bool(self._run(expr, context, step, as_bool=True))

    def _run(self, expr: str, context: Mapping[str, Any], step: str, *, as_bool: bool) -> Any:
        try:
            # A JSON text is a JavaScript literal (NaN and Infinity included, as globals).
            call = f"__gm_run({json.dumps(expr)}, {json.dumps(dict(context))}, {json.dumps(as_bool)})"
        except (TypeError, ValueError) as exc:
            raise ExpressionError(step, expr, f"the context is not JSON: {exc}") from None
        with self._lock:
            racer = self._isolate()
            try:
                answer = racer.eval(call, timeout_sec=self.timeout_s)
            except JSTimeoutException:
                self._discard()
                raise ExpressionError(step, expr, f"took longer than {self.timeout_s:g} s") from None
            except JSOOMException:
                self._discard()
                raise ExpressionError(
                    step, expr, f"used more than {self.max_memory // (1024 * 1024)} MiB of memory"
                ) from None
            except JSEvalException as exc:
                raise ExpressionError(step, expr, str(exc).strip().splitlines()[0]) from None
        if not isinstance(answer, str):
            raise ExpressionError(step, expr, "the engine gave no answer")
        decoded = json.loads(answer)
        if "e" in decoded:
            raise ExpressionError(step, expr, str(decoded["e"]))
        return decoded.get("v")
