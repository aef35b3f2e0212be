"""The data of Gristmill: job kinds and statuses, the job record, script versions."""

from __future__ import annotations

import enum
import json
from typing import Any

import msgpack
from pydantic import BaseModel, ConfigDict, ValidationError

from common import codec
from common.errors import BadRecord as BadRecord  # re-exported: this was its home


class Kind(enum.StrEnum):
    """What a job runs (DESIGN.md §1)."""

    SCRIPT = "script"
    PREVIEW = "preview"
    DEPENDENCIES = "dependencies"
    FLOW = "flow"
    FLOWPREVIEW = "flowpreview"


class Status(enum.StrEnum):
    """Where a job is; the last three are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELED = "canceled"


TERMINAL_STATUSES = frozenset({Status.SUCCESS, Status.FAILURE, Status.CANCELED})
# Record fields no view shows: the fencing token and the index bookkeeping.
INTERNAL_FIELDS = frozenset({"claim", "ix"})

# Fields stored as integers in the record (epoch ms, counters).
_INT_FIELDS = frozenset(
    {"scheduled_for", "created_at", "started_at", "completed_at", "priority", "timeout_s",
     "attempt", "duration_ms", "restarts", "retries", "log_bytes", "log_dropped_lines",
     "log_dropped_bytes", "result_bytes"}
)


class Job(BaseModel):
    """A job record as stored in ``gm:{wg:G}:job:<id>`` (DESIGN.md §4 names)."""

    model_config = ConfigDict(extra="allow")

    id: str
    kind: Kind
    status: Status
    tag: str
    group: str
    language: str
    scheduled_for: int
    created_at: int
    created_by: str = "u/inbox"
    permissioned_as: str = "u/inbox"
    script_path: str | None = None
    script_hash: str | None = None
    code: str | None = None
    args: dict[str, Any] = {}
    started_at: int | None = None
    completed_at: int | None = None
    parent_job: str | None = None
    root_job: str | None = None
    # A flow's step: its module id, and the group of its flow job (where its outcome goes).
    flow_step_id: str | None = None
    flow_group: str | None = None
    priority: int = 0
    timeout_s: int | None = None
    retry: dict[str, Any] | None = None
    attempt: int = 0
    restarts: int = 0
    retries: int = 0
    worker: str | None = None
    claim: str | None = None
    result: Any = None
    # A result over max_result_bytes kept in the object store (storage/results.py).
    result_ref: str | None = None
    result_bytes: int | None = None
    error: dict[str, Any] | None = None
    duration_ms: int | None = None
    canceled_by: str | None = None
    canceled_reason: str | None = None
    schedule_path: str | None = None
    raw_spec: str | None = None
    cancel_requested: str | None = None
    skip_if_running: str | None = None
    log_bytes: int | None = None  # log bytes kept in Redis (bounded by max_log_bytes)
    log_dropped_lines: int | None = None  # lines beyond that bound, dropped
    log_dropped_bytes: int | None = None
    # The job's listing index entries (common/indexes.py); internal, never shown.
    ix: str | None = None

    def public(self) -> dict[str, Any]:
        """The record as shown to people and API callers: decoded, without internal fields."""
        return self.model_dump(mode="json", exclude_none=True, exclude=set(INTERNAL_FIELDS))

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_redis(cls, fields: dict[bytes, bytes]) -> Job:
        """Decode a record read with HGETALL; BadRecord (naming the field) if it cannot be read."""
        return cls.from_flat([item for pair in fields.items() for item in pair])

    @classmethod
    def from_flat(cls, flat: list[bytes]) -> Job:
        """Decode a record from HGETALL's flat reply (field, value, ...), as a script returns it.

        Each field is decoded by its own rule (:data:`_DECODERS`; any other one is text),
        then validated: our own records cost a few microseconds, and one written by
        another version or damaged is refused with BadRecord rather than half-read."""
        data: dict[str, Any] = {}
        pairs = iter(flat)
        key: str | bytes = b""
        try:
            for key, raw_value in zip(pairs, pairs, strict=True):
                rule = _DECODERS.get(key)
                if rule is None:
                    data[key.decode()] = raw_value.decode()
                else:
                    data[rule[0]] = rule[1](raw_value)
            return cls.model_validate(data)
        except ValidationError as exc:
            raise BadRecord(str(data.get("id", "?")), _validation_summary(exc)) from None
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            name = key.decode(errors="replace") if isinstance(key, bytes) else key
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise BadRecord(str(data.get("id", "?")),
                            f"field {name!r} cannot be decoded ({detail})") from None

    def to_redis(self) -> dict[str, bytes | str | int]:
        """Encode for HSET; fields that are None are left out."""
        out: dict[str, bytes | str | int] = {}
        for key, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            if key in codec.PACKED_FIELDS:
                out[key] = codec.pack(value)
            elif isinstance(value, bool | int | str):
                out[key] = value if not isinstance(value, bool) else int(value)
            else:
                out[key] = str(value)
        return out


class UnreadableJob(Job):
    """A claimed job whose record could not be read (:class:`BadRecord`): what is readable of
    it, enough for the worker to record it failed, with ``problem`` saying why."""

    problem: str = ""

    @classmethod
    def stand_in(cls, flat: list[bytes], problem: str, *, job_id: str, group: str, worker: str,
                 claim: str) -> UnreadableJob:
        """From the raw record: the fields a completion needs, where they can be read (the
        id, group, worker and claim from the claim itself)."""
        raw = dict(zip(flat[::2], flat[1::2], strict=False))

        def text(name: str, default: str) -> str:
            value = raw.get(name.encode())
            try:
                return value.decode() if isinstance(value, bytes) else default
            except UnicodeDecodeError:
                return default

        def number(name: str) -> int:
            try:
                return int(raw.get(name.encode(), b"0"))
            except ValueError:
                return 0

        kind = text("kind", Kind.SCRIPT.value)
        return cls(
            id=job_id, group=group, status=Status.RUNNING, problem=problem,
            kind=Kind(kind) if kind in Kind._value2member_map_ else Kind.SCRIPT,
            tag=text("tag", ""), language=text("language", ""),
            scheduled_for=number("scheduled_for"), created_at=number("created_at"),
            started_at=number("started_at"), attempt=number("attempt"),
            created_by=text("created_by", "u/inbox"),
            permissioned_as=text("permissioned_as", "u/inbox"),
            worker=worker, claim=claim,
        )


def _decoder(name: str) -> Any:
    if name in codec.PACKED_FIELDS:
        return codec.unpack
    if name in _INT_FIELDS:
        return int
    return bytes.decode


# How each field of a record is decoded, by its raw name: (name, decode).
_DECODERS: dict[bytes, tuple[str, Any]] = {
    name.encode(): (name, _decoder(name)) for name in Job.model_fields
}


def _validation_summary(exc: ValidationError) -> str:
    """The first problems of a refused record, field by field, without its values."""
    problems = [f"field {'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


class ScriptVersion(BaseModel):
    """One immutable version of a script, addressed by its hash."""

    hash: str
    path: str
    language: str
    code: str
    created_at: int
    created_by: str = "u/admin"
    # Defaults for the jobs of this version; a job's own values win.
    timeout_s: int | None = None
    retry: dict[str, Any] | None = None
    tag: str | None = None
    # Sandbox limits of its jobs (memory_mb, ...): they may only tighten the worker's own.
    limits: dict[str, int] | None = None
    # Its Python dependencies (deps/): `locking` | `locked` | `failed`; absent: none needed.
    lock_status: str | None = None
    lock: str | None = None  # the pinned requirements (`name==version` a line); "" for none
    lock_job: str | None = None  # the dependencies job that made (or makes) the lock
    requirements: str | None = None  # what was resolved (one requirement a line)

    @property
    def lock_state(self) -> str:
        """`locked`, `locking` or `lock failed: <job id>`, as `script show` prints it."""
        if self.lock_status in (None, "locked"):
            return "locked"
        if self.lock_status == "locking":
            return "locking"
        return f"lock failed: {self.lock_job}"

    @property
    def runnable(self) -> bool:
        """Whether jobs may run it now: locked, or relocking with a lock it already has."""
        return self.lock_status in (None, "locked") or (
            self.lock_status == "locking" and self.lock is not None)

    @classmethod
    def from_redis(cls, fields: dict[bytes, bytes]) -> ScriptVersion:
        data: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items()}
        for packed in ("retry", "limits"):
            if packed in data:
                data[packed] = json.loads(data[packed])
        return cls.model_validate(data)
