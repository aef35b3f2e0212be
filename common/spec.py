"""Job specs: what a producer asks for, parsed and checked without Redis.

The same spec shape comes from the inbox (raw JSON from any Redis client), the
CLI and the Python client (DESIGN.md §6). :func:`parse_spec` turns raw input
into a :class:`JobSpec` or raises :class:`SpecError` with a message that says
exactly what is wrong.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.errors import SpecError
from common.languages import LANGUAGES
from common.models import Kind
from common.retry import parse_policy

RUNNABLE_FIELDS = ("path", "hash", "code", "flow_path", "flow")
MAX_SPEC_BYTES = 8 * 1024 * 1024


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
    scheduled_for: int | None = None
    tag: str | None = None
    priority: int = 0
    timeout_s: int | None = Field(default=None, gt=0)
    retry: dict[str, Any] | None = None
    permissioned_as: str | None = None
    token: str | None = None

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
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time or epoch milliseconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
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
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SpecError(f"spec is not valid JSON: {exc}") from None


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
        return str(uuid.UUID(str(data["id"])))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, AttributeError):
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
