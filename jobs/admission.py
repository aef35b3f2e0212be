"""Admission: a spec becomes a queued job, or a failure record that says why.

Shared by every entry point (Python client, CLI, the scheduler's inbox), so a
spec is judged the same way wherever it comes from.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from auth.authn import require_live
from auth.permissions import Acl, FolderAcl, Principal, may_run_as, require, require_author
from common import log
from common.clock import Clock, now_ms
from common.connection import redis_errors
from common.errors import AuthError, DuplicateJob, NotFound, PermissionDenied, SpecError
from common.instance import decode as decode_instance
from common.keys import Keys
from common.languages import LANGUAGES
from common.models import Job, Kind, Status
from common.settings import Settings
from common.store import Store
from jobs import bulk
from jobs import spec as specs
from jobs.scripts import ScriptStore
from jobs.spec import JobSpec

INBOX_USER = "u/inbox"
ADMIN_USER = "u/admin"
# Operators reach Redis directly (CLI, Python client): they act as the admin.
OPERATOR = Principal(user="admin", role="admin")
# A tokenless inbox spec: it may run any script (its producer could write Redis
# directly anyway), but as an identity that may read nothing.
INBOX = Principal(user="inbox")


class TokenLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def job_id(self) -> str | None: ...


class AuthContextLike(Protocol):
    @property
    def principal(self) -> Principal: ...
    @property
    def token(self) -> TokenLike: ...


class Authority(Protocol):
    """What admission needs of the identity store."""

    def authenticate(self, token: str) -> AuthContextLike: ...
    def principal_for(self, identity: str) -> Principal: ...
    def access(self, path: str) -> tuple[Acl, FolderAcl | None]: ...
class FlowJobsLike(Protocol):
    """What admission needs of the flows package (flows/jobs.py), which builds on jobs/, not under it."""

    def describe(self, spec: JobSpec) -> dict[str, Any]: ...
    def open(self, job: Job, spec: JobSpec | None = None) -> None: ...


FLOW_KINDS = frozenset({Kind.FLOW, Kind.FLOWPREVIEW})
FLOW_TAG = "flow"
ROUTE_CACHE_S = 5.0
# Tags and group names become parts of Redis keys: a short, safe alphabet.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass
class BatchOutcome:
    """What became of a batch of specs, in their order."""

    ids: list[str] = field(default_factory=list)  # one per spec; a rejected one's: its record's
    rejected: dict[int, str] = field(default_factory=dict)  # spec index -> why (a record says so too)
    duplicates: list[int] = field(default_factory=list)  # indexes whose id existed: not run twice

    def extend(self, other: BatchOutcome) -> None:
        offset = len(self.ids)
        self.ids.extend(other.ids)
        self.rejected.update({offset + i: why for i, why in other.rejected.items()})
        self.duplicates.extend(offset + i for i in other.duplicates)


RawSpec = JobSpec | dict[str, Any] | bytes | str


class Admission:
    """Turns specs into jobs for one store."""

    def __init__(
        self, store: Store, scripts: ScriptStore, settings: Settings, *, clock: Clock = now_ms,
        authority: Authority | None = None, flows: FlowJobsLike | None = None,
    ) -> None:
        self.store = store
        self.flows = flows
        self.authority = authority
        self.log = log.get()
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

    def build(
        self, spec: JobSpec, *, principal: Principal, trusted: bool = False,
        parent_job: str | None = None, root_job: str | None = None,
    ) -> Job:
        """The job a valid spec asks for, on behalf of ``principal``.

        SpecError when it cannot be run, PermissionDenied when the principal may
        not run it as ``permissioned_as``, AuthError for a bad spec token.
        ``trusted`` (operators over Redis, the tokenless inbox) skips the run
        permission on the script's path, never the identity rule.
        """
        if spec.token is not None:
            principal, parent_job = self._token_principal(spec.token)
            trusted = False
        permissioned_as = spec.permissioned_as or principal.name
        if not may_run_as(principal, permissioned_as):
            raise PermissionDenied(
                f"permissioned_as: {principal.name} may not run jobs as {permissioned_as} "
                "(only as itself or a group it belongs to)"
            )
        if principal.is_admin and permissioned_as != principal.name:
            self.log.info("admin runs a job as another identity", admin=principal.name,
                          permissioned_as=permissioned_as)
        fields: dict[str, Any]
        defaults: dict[str, Any]
        if spec.path is not None or spec.hash is not None:
            try:
                version = self.scripts.header(spec.hash or spec.path or "")
            except NotFound as exc:
                raise SpecError(str(exc)) from None
            if version.lock_status == "failed":
                raise SpecError(
                    f"script version {version.hash} of {version.path} cannot run: lock failed: "
                    f"{version.lock_job} (see `gristmill job get {version.lock_job}`); fix its "
                    f"requirements and deploy again, or `gristmill script lock {version.hash}`")
            if not trusted:
                self._require_run(permissioned_as, version.path)
            fields = {"kind": Kind.SCRIPT, "script_path": version.path,
                      "script_hash": version.hash, "language": version.language}
            defaults = {"tag": version.tag, "timeout_s": version.timeout_s, "retry": version.retry}
        elif spec.code is not None:
            require_author(principal, "run raw code (a preview)")
            fields = {"kind": Kind.PREVIEW, "code": spec.code, "language": spec.language}
            defaults = {}
        else:
            if self.flows is None:
                raise SpecError("flow jobs (flow_path, flow) are not enabled on this connection")
            fields = self.flows.describe(spec)
            if fields["kind"] == Kind.FLOWPREVIEW:
                require_author(principal, "run a flow preview (raw flow)")
            elif not trusted:
                self._require_run(permissioned_as, fields["script_path"])
            defaults = {"tag": FLOW_TAG}
        tag = spec.tag or defaults.get("tag") or fields["language"]
        if not NAME_PATTERN.fullmatch(tag):
            raise SpecError(f"tag: {tag!r} is not a tag (letters, digits, _ . -, at most 64)")
        now = self.clock()
        job_id = spec.id or str(uuid.uuid4())
        return Job(
            id=job_id, status=Status.QUEUED, tag=tag,
            group=self.route(tag), scheduled_for=spec.scheduled_for or now, created_at=now,
            created_by=principal.name, permissioned_as=permissioned_as, args=spec.args,
            priority=spec.priority, timeout_s=spec.timeout_s or defaults.get("timeout_s"),
            retry=spec.retry or defaults.get("retry"), parent_job=parent_job,
            root_job=root_job or (parent_job and self._root_of(parent_job)) or None, **fields,
        )

    def _token_principal(self, token: str) -> tuple[Principal, str | None]:
        if self.authority is None:
            raise SpecError("token: this instance has no identity store")
        try:
            context = self.authority.authenticate(token)
            require_live(context.token, self.store)
        except AuthError as exc:
            raise SpecError(f"token: {exc}") from None
        return context.principal, context.token.job_id

    def require_run(self, permissioned_as: str, path: str) -> None:
        """PermissionDenied unless ``permissioned_as`` may run the item at ``path``."""
        self._require_run(permissioned_as, path)

    def _require_run(self, permissioned_as: str, path: str) -> None:
        if self.authority is None:
            return
        try:
            runner = self.authority.principal_for(permissioned_as)
        except NotFound:
            raise PermissionDenied(f"{permissioned_as} does not exist") from None
        acl, folder = self.authority.access(path)
        require(runner, "run", path, acl, folder)

    def _root_of(self, parent_job: str) -> str:
        try:
            parent = self.store.get_job(parent_job)
        except NotFound:
            return parent_job
        return parent.root_job or parent.id

    def submit(self, spec: JobSpec, *, principal: Principal = OPERATOR, trusted: bool = True,
               parent_job: str | None = None) -> Job:
        """Validate and enqueue; raise SpecError, PermissionDenied or DuplicateJob."""
        job = self.build(spec, principal=principal, trusted=trusted, parent_job=parent_job)
        if job.kind in FLOW_KINDS and self.flows is not None:
            self.flows.open(job, spec)
        else:
            self.store.enqueue(job, fresh_id=spec.id is None)
        return job

    def submit_many(self, batch: Sequence[RawSpec], *, principal: Principal = OPERATOR,
                    trusted: bool = True, new_ids: Sequence[bool] | None = None,
                    created_at: int | None = None) -> BatchOutcome:
        """Validate and enqueue a batch in one pipeline (two with producers' ids).

        Each distinct template (a spec without ``id`` and ``args``) is parsed and built
        once; each job is then its template's job with its own id and args, checked as
        the spec model checks them (:mod:`jobs.bulk`). A spec that cannot be accepted is
        recorded as a failed job saying why (as the inbox does) and named in
        ``rejected``; the others are queued. ``new_ids[i]``: spec ``i``'s id was generated
        by the producer and was never admitted, so it needs no claim (the scheduler
        knows it of a stored batch it takes for the first time). ``created_at``: when the
        producer pushed the batch (never later than now), also the due time of a spec
        without ``scheduled_for``; else the jobs are created now.
        """
        outcome = BatchOutcome(ids=[""] * len(batch))
        jobs: list[tuple[Job, bool]] = []
        places: list[int] = []
        bases: dict[Hashable, Job | str] = {}
        for i, raw in enumerate(batch):
            try:
                data = bulk.as_data(raw)
                template = {k: v for k, v in data.items() if k not in bulk.PER_JOB_FIELDS}
                key = bulk.template_key(template)
                if key not in bases:
                    bases[key] = self._base(template, principal=principal, trusted=trusted)
                base = bases[key]
                if isinstance(base, str):
                    raise SpecError(base)
                args = bulk.job_args(data.get("args"))
                given = data.get("id")
                job_id = str(uuid.uuid4()) if given is None else bulk.job_id(given)
                update: dict[str, Any] = {"id": job_id, "args": args}
                if created_at is not None and created_at < base.created_at:
                    update["created_at"] = created_at
                    if template.get("scheduled_for") is None:  # due: as of its creation
                        update["scheduled_for"] = created_at
                job = base.model_copy(update=update)
                if job.kind in FLOW_KINDS and self.flows is not None:
                    # A flow job is opened with its flow, one script each: not in the pipeline.
                    outcome.ids[i] = job.id
                    self.flows.open(job, specs.parse_spec(data))
                    continue
            except DuplicateJob:
                outcome.duplicates.append(i)
                continue
            except (SpecError, PermissionDenied) as exc:
                outcome.rejected[i] = str(exc)
                outcome.ids[i] = self.reject(raw_text(raw), str(exc))
                continue
            jobs.append((job, given is None or (new_ids is not None and new_ids[i])))
            places.append(i)
        if jobs:
            for i, (job, _), queued in zip(places, jobs, self.store.enqueue_many(jobs),
                                           strict=True):
                outcome.ids[i] = job.id
                if not queued:
                    outcome.duplicates.append(i)
        return outcome

    def _base(self, template: dict[str, Any], *, principal: Principal,
              trusted: bool) -> Job | str:
        """The job a template asks for (its id and args replaced per job), or why not."""
        try:
            return self.build(specs.parse_spec(template), principal=principal, trusted=trusted)
        except (SpecError, PermissionDenied) as exc:
            return str(exc)

    def judge(self, template: dict[str, Any]) -> str | None:
        """Why the operator may not queue a spec of ``template`` (any id, any args); None
        when it may. The full check of :meth:`build`, for ``enqueue_many``'s templates."""
        try:
            self.build(specs.parse_spec(template), principal=OPERATOR, trusted=True)
        except (SpecError, PermissionDenied) as exc:
            return str(exc)
        return None

    def admit_raw(self, raw: bytes) -> tuple[str, str]:
        """Admit one raw inbox spec: (job id, ``accepted`` | ``duplicate`` | ``rejected``).

        A rejected spec gets a failure record; a duplicate id is not run again.
        """
        try:
            spec = specs.parse_spec(raw)
            return self.submit(spec, principal=INBOX, trusted=True).id, "accepted"
        except DuplicateJob as exc:
            return exc.job_id, "duplicate"
        except (SpecError, PermissionDenied) as exc:
            return self.reject(raw, str(exc)), "rejected"

    @redis_errors
    def reject(self, raw: bytes | str, message: str) -> str:
        """Record a spec that was refused, with the error and the raw spec kept.

        Whatever ``raw`` holds, this writes a record: every field is built from
        checked values only (the raw text is kept redacted and bounded,
        :func:`jobs.spec.keep_raw`), so the rejection cannot fail the way the
        admission did.
        """
        data = specs.decode_lenient(raw)
        fields = data if isinstance(data, dict) else {}
        tag = fields.get("tag")
        tag = tag if isinstance(tag, str) and NAME_PATTERN.fullmatch(tag) else ""
        language = fields.get("language")
        language = language if isinstance(language, str) and language in LANGUAGES else ""
        args = fields.get("args")
        try:
            specs.check_json(args)
        except ValueError:
            args = None
        kept = specs.keep_raw(raw)
        token = fields.get("token")
        if isinstance(token, str) and token:
            kept = kept.replace(specs.safe_text(token), specs.REDACTED)
        producer_id = specs.salvage_id(fields)
        now = self.clock()
        job = Job(
            id=producer_id or str(uuid.uuid4()), kind=specs.guess_kind(data),
            status=Status.FAILURE, tag=tag, language=language, group=self.route(tag),
            scheduled_for=now, created_at=now, completed_at=now, created_by=INBOX_USER,
            permissioned_as=INBOX_USER, args=args if isinstance(args, dict) else {},
            error={"name": "InvalidSpec", "traceback": "",
                   "message": specs.safe_text(message, specs.MAX_ERROR_MESSAGE)},
            raw_spec=kept,
        )
        retention = decode_instance(self.store.client.hgetall(self.keys.settings)).retention_s
        return self.store.reject(job, retention_s=retention, fresh_id=producer_id is None)


def raw_text(raw: RawSpec) -> bytes | str:
    """A spec as the text a rejection record keeps."""
    if isinstance(raw, bytes | str):
        return raw
    if isinstance(raw, JobSpec):
        return raw.model_dump_json(exclude_none=True)
    return json.dumps(raw, default=repr)
