"""Bind a job's JSON args object to the parameters of its ``main`` function.

This module runs inside the job's child process (see ``pywrapper``), so it
imports the standard library only: no pydantic, no redis, no structlog.
Pydantic models are recognised by duck typing (a class with ``model_validate``).
"""

from __future__ import annotations

import collections.abc as cabc
import dataclasses
import enum
import importlib
import inspect
import types
import typing
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

__all__ = ["ArgumentError", "Binder", "bind_args", "call_bound"]

_NONE_TYPE = type(None)
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_SEQUENCES: dict[Any, type] = {
    list: list, cabc.Sequence: list, cabc.MutableSequence: list, cabc.Iterable: list,
    cabc.Collection: list, set: set, cabc.Set: set, cabc.MutableSet: set, frozenset: frozenset,
}
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)


class ArgumentError(ValueError):
    """The job's args cannot be bound to the parameters of its main function."""


class _Mismatch(Exception):
    """A value does not fit a type; ``where`` is the path inside the argument."""

    def __init__(self, where: str, expected: str, value: object, detail: str = "") -> None:
        super().__init__(where)
        self.where, self.expected, self.value, self.detail = where, expected, value, detail


class Binder:
    """Binds args to one function; what depends only on the function is worked out once.

    The parameters and their resolved annotations are read when the Binder is
    made, so a job pays only for converting its own args (a dedicated process
    keeps one Binder per loaded ``main``: a new version is a new process). A
    later change to the function's annotations or ``__signature__`` is not
    seen. If the signature cannot be read, every ``bind`` tries again and
    raises what ``inspect.signature`` raises, as ``bind_args`` always has.
    """

    __slots__ = ("_declared", "_name", "_params", "_positional", "_var_kw", "func")

    def __init__(self, func: Callable[..., object]) -> None:
        self.func = func
        self._name: str = getattr(func, "__name__", "main")
        # (name, default or _NO_DEFAULT, annotation) for each parameter that JSON can name.
        self._params: tuple[tuple[str, object, Any], ...] | None = None
        self._declared: frozenset[str] = frozenset()
        self._var_kw: Any = _NO_VAR_KW  # the annotation of **kwargs, if main takes them
        self._positional: tuple[str, ...] = ()
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):
            return  # bind() raises it again, job by job
        hints = _type_hints(func)
        params = tuple(signature.parameters.values())
        named: list[tuple[str, object, Any]] = []
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                self._var_kw = hints.get(p.name, Any)
            elif p.kind is not p.VAR_POSITIONAL:  # nothing can be bound to *args
                default = _NO_DEFAULT if p.default is p.empty else p.default
                named.append((p.name, default, hints.get(p.name, Any)))
        self._params = tuple(named)
        self._declared = frozenset(p.name for p in params)
        self._positional = tuple(p.name for p in params if p.kind is p.POSITIONAL_ONLY)

    def bind(self, args: dict[str, object]) -> dict[str, object]:
        """The keyword arguments to call the function with; see ``bind_args``."""
        if self._params is None:
            inspect.signature(self.func)  # raises, as it did when the Binder was made
            raise AssertionError("unreachable: the signature became readable")
        name = self._name
        bound: dict[str, object] = {}
        missing: list[str] = []
        for param, default, hint in self._params:
            if param in args:
                bound[param] = _convert_param(name, param, args[param], hint)
            elif default is not _NO_DEFAULT:
                bound[param] = default
            else:
                missing.append(param)
        if missing:
            raise ArgumentError(f"missing required argument(s) for {name}: {', '.join(missing)}")
        if self._var_kw is not _NO_VAR_KW:
            for key, value in args.items():
                if key not in self._declared:
                    bound[key] = _convert_param(name, key, value, self._var_kw)
        return bound

    def call(self, bound: dict[str, object]) -> object:
        """Call the function with the result of ``bind``, positional-only parameters by position."""
        positional = [bound.pop(param) for param in self._positional]
        return self.func(*positional, **bound)


_NO_DEFAULT = object()
_NO_VAR_KW = object()


def bind_args(func: Callable[..., object], args: dict[str, object]) -> dict[str, object]:
    """Return the keyword arguments to call ``func`` with, converted by annotation.

    Keys that ``func`` does not declare are dropped unless it takes ``**kwargs``;
    a parameter missing from ``args`` gets its default (included in the result).
    Raises ArgumentError naming every missing required parameter, or the first
    parameter whose value cannot be converted to its annotation. For one job;
    a process that binds many jobs to one function keeps a ``Binder``.
    """
    return Binder(func).bind(args)


def call_bound(func: Callable[..., object], bound: dict[str, object]) -> object:
    """Call ``func`` with the result of ``bind_args``, positional-only parameters by position."""
    positional = [
        bound.pop(p.name)
        for p in inspect.signature(func).parameters.values()
        if p.kind is p.POSITIONAL_ONLY
    ]
    return func(*positional, **bound)


def _type_hints(func: Callable[..., object]) -> dict[str, Any]:
    """Resolved annotations; a name that cannot be resolved counts as unannotated."""
    try:
        return typing.get_type_hints(func)
    except Exception:  # a broken annotation must not stop the job
        pass
    hints: dict[str, Any] = {}
    for key, ann in getattr(func, "__annotations__", {}).items():
        try:
            # A quoted annotation under `from __future__ import annotations` is a
            # string of a string, hence the loop. eval is fine: it is the user's
            # own code, in the job's own process.
            for _ in range(2):
                if isinstance(ann, str):
                    ann = eval(ann, getattr(func, "__globals__", {}))
        except Exception:
            continue
        hints[key] = ann
    return hints


def _convert_param(func_name: str, param: str, value: object, tp: Any) -> object:
    try:
        return _convert(value, tp, param)
    except _Mismatch as err:
        detail = f" ({err.detail})" if err.detail else ""
        raise ArgumentError(
            f"argument {err.where!r} of {func_name}: expected {err.expected}, "
            f"got {_shown(err.value)}{detail}"
        ) from None


def _convert(value: object, tp: Any, where: str) -> object:
    """Convert one JSON value to ``tp``; raise _Mismatch if it does not fit."""
    if tp is Any or tp is object or isinstance(tp, typing.TypeVar):
        return value
    if isinstance(tp, typing.NewType):
        return _convert(value, tp.__supertype__, where)
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _convert_union(value, tp, where)
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch(where, _describe(tp), value)
    if origin is not None:
        return _convert_generic(value, tp, origin, where)
    if tp is None or tp is _NONE_TYPE:
        if value is None:
            return None
        raise _Mismatch(where, "null", value)
    if not isinstance(tp, type):
        return value  # an annotation we do not understand: pass the JSON value through
    scalar = _SCALARS.get(tp) or _BY_NAME.get(f"{tp.__module__}.{tp.__qualname__}")
    if scalar is not None:
        expected, parse = scalar
        try:
            return parse(value)
        except (TypeError, ValueError, ArithmeticError) as exc:  # binascii.Error is a ValueError
            detail = str(exc) if isinstance(exc, _Detail) else ""
            raise _Mismatch(where, expected, value, detail) from None
    if issubclass(tp, enum.Enum):
        return _convert_enum(value, tp, where)
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(value, tp, where)
    validate = getattr(tp, "model_validate", None)
    if callable(validate):
        try:
            return validate(value)
        except Exception as exc:  # pydantic's ValidationError, duck-typed
            raise _Mismatch(where, tp.__name__, value, _first_line(exc)) from None
    if tp in _SEQUENCES or tp is tuple or tp in _MAPPINGS:
        return _convert_generic(value, tp, tp, where)
    if isinstance(value, tp):
        return value
    raise _Mismatch(where, tp.__name__, value)


def _convert_union(value: object, tp: Any, where: str) -> object:
    members = typing.get_args(tp)
    if value is None and _NONE_TYPE in members:
        return None
    # A value that already has one of the member types keeps it ("1" stays a str for int | str).
    for member in members:
        if member in (str, bool, int, float) and type(value) is member:
            return value
    for member in members:
        if member is _NONE_TYPE:
            continue
        try:
            return _convert(value, member, where)
        except _Mismatch:
            continue
    raise _Mismatch(where, _describe(tp), value)


def _convert_generic(value: object, tp: Any, origin: Any, where: str) -> object:
    params = typing.get_args(tp)
    if origin in _SEQUENCES:
        if not isinstance(value, list):
            raise _Mismatch(where, _describe(tp), value)
        item = params[0] if params else Any
        return _SEQUENCES[origin](_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(origin, type) and issubclass(origin, tuple):
        if not isinstance(value, list):
            raise _Mismatch(where, _describe(tp), value)
        if not params or (len(params) == 2 and params[1] is Ellipsis):
            kinds = [params[0] if params else Any] * len(value)
        elif len(params) == len(value):
            kinds = list(params)
        else:
            raise _Mismatch(where, _describe(tp), value, f"{len(params)} items needed")
        pairs = enumerate(zip(value, kinds, strict=True))
        return tuple(_convert(v, k, f"{where}[{i}]") for i, (v, k) in pairs)
    if origin in _MAPPINGS:
        if not isinstance(value, dict):
            raise _Mismatch(where, _describe(tp), value)
        key_tp, val_tp = params if len(params) == 2 else (Any, Any)
        return {
            _convert(k, key_tp, f"{where}[{k!r}]"): _convert(v, val_tp, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    return value  # Callable[...], Protocol generics, ...: nothing sensible to convert to


def _convert_dataclass(value: object, tp: type, where: str) -> object:
    if not isinstance(value, dict):
        raise _Mismatch(where, f"{tp.__name__} (an object)", value)
    hints = _type_hints(tp)
    kwargs: dict[str, object] = {}
    missing: list[str] = []
    for field in dataclasses.fields(tp):
        if not field.init:
            continue
        if field.name in value:
            kwargs[field.name] = _convert(
                value[field.name], hints.get(field.name, Any), f"{where}.{field.name}"
            )
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            missing.append(field.name)
    if missing:
        raise _Mismatch(where, tp.__name__, value, f"missing field(s): {', '.join(missing)}")
    try:
        return tp(**kwargs)
    except (TypeError, ValueError) as exc:
        raise _Mismatch(where, tp.__name__, value, _first_line(exc)) from None


def _convert_enum(value: object, tp: type[enum.Enum], where: str) -> object:
    try:
        return tp(value)
    except ValueError:
        pass
    if isinstance(value, str) and value in tp.__members__:
        return tp.__members__[value]
    allowed = ", ".join(repr(m.value) for m in tp)
    raise _Mismatch(where, f"{tp.__name__} (one of {allowed})", value)


class _Detail(ValueError):
    """A conversion failure whose message is worth showing to the user."""


def _to_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise TypeError


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and (word := value.strip().lower()) in _TRUE | _FALSE:
        return word in _TRUE
    raise TypeError


def _to_int(value: object) -> int:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            value = float(value)  # "3.0" is still 3; "abc" raises here
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _Detail("it has a fractional part") if isinstance(value, float) else TypeError


def _to_float(value: object) -> float:
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return float(value)
    raise TypeError


def _to_bytes(value: object) -> bytes:
    import base64  # here: most jobs never take bytes

    text = _to_str(value)
    if "-" in text or "_" in text:
        return base64.urlsafe_b64decode(text)
    return base64.b64decode(text, validate=True)


def _to_datetime(value: object) -> datetime:
    text = _to_str(value).strip()
    # fromisoformat only learned "Z" in 3.11; spell it out so the intent is explicit.
    return datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)


def _to_date(value: object) -> date:
    return date.fromisoformat(_to_str(value).strip())


def _from_string(module: str, name: str) -> Callable[[object], object]:
    """Construct ``module.name`` from a string; the module is imported only when used."""
    def parse(value: object) -> object:
        return getattr(importlib.import_module(module), name)(_to_str(value))
    return parse


# Exact types only: a subclass (a user's own datetime or str subclass) is not converted.
_SCALARS: dict[Any, tuple[str, Callable[[object], object]]] = {
    str: ("str", _to_str), bool: ("bool", _to_bool), int: ("int", _to_int),
    float: ("float", _to_float), bytes: ("bytes (a base64 string)", _to_bytes),
    datetime: ("datetime (an ISO-8601 string)", _to_datetime),
    date: ("date (an ISO-8601 string, YYYY-MM-DD)", _to_date),
}
# Types found by name, so that their modules are imported only by jobs that use them
# (every job pays for this module's imports before its code runs).
_BY_NAME: dict[str, tuple[str, Callable[[object], object]]] = {
    "pathlib.Path": ("Path (a string)", _from_string("pathlib", "Path")),
    "pathlib.PurePath": ("PurePath (a string)", _from_string("pathlib", "PurePath")),
    "uuid.UUID": ("UUID (a string)", _from_string("uuid", "UUID")),
    "decimal.Decimal": ("Decimal (a string)", _from_string("decimal", "Decimal")),
}


def _describe(tp: Any) -> str:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _shown(value: object, limit: int = 60) -> str:
    """The JSON kind and a short repr of a value, for messages."""
    if value is None:
        return "null"
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{_JSON_KINDS.get(type(value), type(value).__name__)} {text}"


_JSON_KINDS = {bool: "bool", int: "int", float: "float", str: "string", list: "array",
               dict: "object"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
