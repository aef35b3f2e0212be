"""Admission: a spec becomes a queued job, or a failure record that says why.

Shared by every entry point (Python client, CLI, the scheduler's inbox), so a
spec is judged the same way wherever it comes from.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from common import spec as specs
from common.clock import Clock, now_ms
from common.connection import redis_errors
from common.errors import DuplicateJob, NotFound, SpecError
from common.instance import decode as decode_instance
from common.keys import Keys
from common.models import Job, Kind, Status
from common.scripts import ScriptStore
from common.settings import Settings
from common.spec import JobSpec
from common.store import Store

INBOX_USER = "u/inbox"
ADMIN_USER = "u/admin"
ROUTE_CACHE_S = 5.0
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Admission:
    """Turns specs into jobs for one store."""

    def __init__(
        self, store: Store, scripts: ScriptStore, settings: Settings, *, clock: Clock = now_ms
    ) -> None:
        self.store = store
        self.scripts = scripts
        self.settings = settings
        self.clock = clock
        self._routes: dict[str, str] = {}
        self._routes_read_at = -ROUTE_CACHE_S

    @property
    def keys(self) -> Keys:
        return self.store.keys

    @redis_errors
    def route(self, tag: str) -> str:
        """The worker group that serves ``tag`` (``gm:routing``, cached a few seconds)."""
        if time.monotonic() - self._routes_read_at > ROUTE_CACHE_S:
            raw = self.store.client.hgetall(self.keys.routing)
            self._routes = {k.decode(): v.decode() for k, v in raw.items()}
            self._routes_read_at = time.monotonic()
        if tag in self._routes:
            return self._routes[tag]
        if self.settings.default_route == "tag":
            return tag or "default"
        return self.settings.default_route

    def build(self, spec: JobSpec, *, created_by: str) -> Job:
        """The job a valid spec asks for; SpecError when it cannot be run."""
        if spec.token is not None:
            raise SpecError("token: API tokens are not supported by this version yet")
        permissioned_as = spec.permissioned_as or created_by
        if permissioned_as != created_by and created_by != ADMIN_USER:
            raise SpecError(
                f"permissioned_as: {created_by} may not run jobs as {permissioned_as}"
            )
        fields: dict[str, Any]
        defaults: dict[str, Any]
        if spec.path is not None or spec.hash is not None:
            try:
                version = self.scripts.get(spec.hash or spec.path or "")
            except NotFound as exc:
                raise SpecError(str(exc)) from None
            fields = {"kind": Kind.SCRIPT, "script_path": version.path,
                      "script_hash": version.hash, "language": version.language}
            defaults = {"tag": version.tag, "timeout_s": version.timeout_s, "retry": version.retry}
        elif spec.code is not None:
            fields = {"kind": Kind.PREVIEW, "code": spec.code, "language": spec.language}
            defaults = {}
        else:
            raise SpecError("flow jobs (flow_path, flow) are not supported by this version yet")
        tag = spec.tag or defaults.get("tag") or fields["language"]
        if not _NAME.match(tag):
            raise SpecError(f"tag: {tag!r} is not a tag (letters, digits, _ . -, at most 64)")
        now = self.clock()
        return Job(
            id=spec.id or str(uuid.uuid4()), status=Status.QUEUED, tag=tag,
            group=self.route(tag), scheduled_for=spec.scheduled_for or now, created_at=now,
            created_by=created_by, permissioned_as=permissioned_as, args=spec.args,
            priority=spec.priority, timeout_s=spec.timeout_s or defaults.get("timeout_s"),
            retry=spec.retry or defaults.get("retry"), **fields,
        )

    def submit(self, spec: JobSpec, *, created_by: str = ADMIN_USER) -> Job:
        """Validate and enqueue; raise SpecError or DuplicateJob."""
        job = self.build(spec, created_by=created_by)
        self.store.enqueue(job, fresh_id=spec.id is None)
        return job

    def admit_raw(self, raw: bytes) -> tuple[str, str]:
        """Admit one raw inbox spec: (job id, ``accepted`` | ``duplicate`` | ``rejected``).

        A rejected spec gets a failure record; a duplicate id is not run again.
        """
        try:
            spec = specs.parse_spec(raw)
            return self.submit(spec, created_by=INBOX_USER).id, "accepted"
        except DuplicateJob as exc:
            return exc.job_id, "duplicate"
        except SpecError as exc:
            return self.reject(raw, str(exc)), "rejected"

    @redis_errors
    def reject(self, raw: bytes | str, message: str) -> str:
        """Record a spec that was refused, with the error and the raw spec kept."""
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = None
        fields = data if isinstance(data, dict) else {}
        tag = fields.get("tag") if isinstance(fields.get("tag"), str) else ""
        language = fields.get("language") if isinstance(fields.get("language"), str) else ""
        producer_id = specs.salvage_id(text)
        now = self.clock()
        job = Job(
            id=producer_id or str(uuid.uuid4()), kind=specs.guess_kind(data),
            status=Status.FAILURE, tag=tag or "", language=language or "",
            group=self.route(tag) if tag and _NAME.match(tag) else self.route(""),
            scheduled_for=now, created_at=now, completed_at=now, created_by=INBOX_USER,
            permissioned_as=INBOX_USER,
            args=fields["args"] if isinstance(fields.get("args"), dict) else {},
            error={"name": "InvalidSpec", "message": message, "traceback": ""},
            raw_spec=text,
        )
        retention = decode_instance(self.store.client.hgetall(self.keys.settings)).retention_s
        return self.store.reject(job, retention_s=retention, fresh_id=producer_id is None)
