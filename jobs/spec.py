"""Job specs: what a producer asks for, parsed and checked without Redis.

The same spec shape comes from the inbox (raw JSON from any Redis client), the
CLI and the Python client (DESIGN.md §6). :func:`parse_spec` turns raw input
into a :class:`JobSpec` or raises :class:`SpecError` with a message that says
exactly what is wrong.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.errors import SpecError
from common.languages import LANGUAGES
from common.models import Kind
from common.retry import parse_policy

RUNNABLE_FIELDS = ("path", "hash", "code", "flow_path", "flow")

# Bounds checked at admission (README "Limits"). A spec outside them is refused
# with a message naming the field, before anything is written.
MAX_SPEC_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64  # nesting of the whole spec (args, flow, retry); JSON depth, not Python's
MIN_INT, MAX_INT = -(2**63), 2**63 - 1  # integers anywhere in a spec: what msgpack and Lua keep
MAX_TIMEOUT_S = 30 * 24 * 3600
MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
MAX_SCHEDULED_FOR = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last ISO 8601 year
# A rejected spec keeps at most this much of its raw text (the rest is cut with a marker).
MAX_RAW_SPEC_KEPT = 64 * 1024
MAX_ERROR_MESSAGE = 4096
REDACTED = "[redacted]"
_TOKEN_FIELD = re.compile(r'("token"\s*:\s*)"(?:[^"\\]|\\.)*"?')
_TOKEN_VALUE = re.compile(r"gm_[A-Za-z0-9_-]{8,}")


class JobSpec(BaseModel):
    """A request to run something once (DESIGN.md §6)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    id: str | None = None
    path: str | None = None
    hash: str | None = None
    code: str | None = None
    language: str | None = None
    flow_path: str | None = None
    flow: dict[str, Any] | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    scheduled_for: int | None = Field(default=None, ge=0, le=MAX_SCHEDULED_FOR)
    tag: str | None = None
    priority: int = Field(default=0, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    timeout_s: int | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S)
    retry: dict[str, Any] | None = None
    permissioned_as: str | None = None
    token: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: object) -> object:
        # Every value must survive msgpack, Lua and UTF-8 (the record's encodings).
        check_json(data)
        return data

    @field_validator("id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"{value!r} is not a UUID") from None

    @field_validator("scheduled_for", mode="before")
    @classmethod
    def _when(cls, value: object) -> object:
        return parse_time(value) if value is not None else None

    @field_validator("args", mode="before")
    @classmethod
    def _args_object(cls, value: object) -> object:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"must be a JSON object, got {_json_type(value)}")
        return value

    @field_validator("retry")
    @classmethod
    def _retry(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            parse_policy(value)
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is not None and value not in LANGUAGES:
            raise ValueError(f"unknown language {value!r}; supported: {', '.join(LANGUAGES)}")
        return value

    @model_validator(mode="after")
    def _one_runnable(self) -> JobSpec:
        given = [name for name in RUNNABLE_FIELDS if getattr(self, name) is not None]
        if not given:
            raise ValueError(
                "nothing to run: give exactly one of path, hash, code (+ language), "
                "flow_path, flow"
            )
        if len(given) > 1:
            raise ValueError(f"give exactly one of path, hash, code, flow_path, flow; got {given}")
        if self.code is not None and self.language is None:
            raise ValueError("code needs a language (one of: " + ", ".join(LANGUAGES) + ")")
        return self

    @property
    def kind(self) -> Kind:
        return guess_kind(self.model_dump())


def parse_time(value: object) -> int:
    """``scheduled_for`` as epoch ms, from epoch ms or an ISO 8601 string (naive = UTC)."""
    if isinstance(value, bool):
        raise ValueError("must be epoch milliseconds or an ISO 8601 time, got a boolean")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number of epoch milliseconds")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            if len(text) > 20:
                raise ValueError(f"{text[:30]!r}... is not a time: too many digits")
            return int(text)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time or epoch milliseconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            return int(moment.timestamp() * 1000)
        except (OverflowError, ValueError):
            raise ValueError(f"{value!r} is out of range") from None
    raise ValueError(f"must be epoch milliseconds or an ISO 8601 time, got {_json_type(value)}")


def parse_spec(raw: bytes | str | dict[str, Any]) -> JobSpec:
    """Parse and check a spec; raise SpecError saying exactly what is wrong."""
    data = raw if isinstance(raw, dict) else decode_json(raw)
    if not isinstance(data, dict):
        raise SpecError(f"a job spec must be a JSON object, got {_json_type(data)}")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe(exc)) from None


def decode_json(raw: bytes | str) -> Any:
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"spec is {len(raw)} bytes; the limit is {MAX_SPEC_BYTES}")
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise SpecError(f"spec is nested too deeply (the limit is {MAX_DEPTH} levels)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError(f"spec is not valid JSON: {exc}") from None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def check_json(value: object, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise ValueError unless ``value`` is JSON that every store of a record can hold.

    That is: nested at most ``max_depth`` levels, integers within 64 bits, finite
    floats, strings (keys too) that are valid UTF-8 (no lone surrogates). Walks
    iteratively, so a deep value cannot exhaust the interpreter's stack.
    """
    stack: list[tuple[object, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > max_depth:
            raise ValueError(f"{where or 'spec'}: nested deeper than {max_depth} levels")
        if isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not MIN_INT <= item <= MAX_INT:
                raise ValueError(f"{where}: integer out of the 64-bit range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{where}: {item} is not a JSON number")
        elif isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"{where}: object keys must be strings")
                _check_text(key, where)
                stack.append((sub, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(item))
        else:
            raise ValueError(f"{where}: {type(item).__name__} is not JSON")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where or 'spec'}: a string holds a lone surrogate (not UTF-8)") from None


def keep_raw(raw: bytes | str) -> str:
    """The raw spec as a rejection record keeps it: text, tokens redacted, bounded.

    Invalid UTF-8 becomes U+FFFD; escaped lone surrogates stay escaped (JSON text
    is kept as sent). Longer than :data:`MAX_RAW_SPEC_KEPT`: cut, with a marker.
    """
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else safe_text(raw)
    size = len(raw)
    if len(text) > MAX_RAW_SPEC_KEPT:
        text = text[:MAX_RAW_SPEC_KEPT]
    text = _TOKEN_FIELD.sub(lambda m: f'{m[1]}"{REDACTED}"', text)
    text = _TOKEN_VALUE.sub("gm_" + REDACTED, text)
    if size > MAX_RAW_SPEC_KEPT:
        text += f"...[gristmill: raw spec cut at {MAX_RAW_SPEC_KEPT} of {size} characters]"
    return text


def safe_text(text: str, limit: int | None = None) -> str:
    """``text`` as valid UTF-8 (lone surrogates escaped), cut at ``limit`` characters."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def decode_lenient(raw: bytes | str) -> Any:
    """The JSON value of ``raw``, or None when it is not JSON (never raises)."""
    try:
        return decode_json(raw)
    except SpecError:
        return None


def describe(exc: ValidationError) -> str:
    """One line per problem: ``field: what is wrong``."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (allowed: " + ", ".join(JobSpec.model_fields) + ")"
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def salvage_id(raw: bytes | str | dict[str, Any]) -> str | None:
    """The producer's id from a rejected spec, when it is a usable UUID."""
    try:
        data = raw if isinstance(raw, dict) else json.loads(raw)
        return str(uuid.UUID(data["id"]))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, AttributeError, RecursionError):
        return None


def guess_kind(data: object) -> Kind:
    """The kind a (possibly invalid) spec asks for; ``preview`` when it names nothing."""
    if isinstance(data, dict):
        if data.get("flow") is not None:
            return Kind.FLOWPREVIEW
        if data.get("flow_path") is not None:
            return Kind.FLOW
        if data.get("path") is not None or data.get("hash") is not None:
            return Kind.SCRIPT
    return Kind.PREVIEW


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
