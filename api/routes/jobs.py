"""Jobs over HTTP: run (the seeds' "POST request that triggers the script"), read, follow, cancel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from api.auth import Auth, Svc
from api.errors import error_body
from api.services import Services
from auth.identity import AuthContext
from common.errors import BadRecord, GristmillError, JobTimeout, NotFound
from common.models import Job, Kind, Status
from common.queries import EVERYONE, JobFilter, Viewer, counts, list_page
from common.store import LogEntry
from jobs.spec import JobSpec, parse_spec, parse_time
from storage.logs import read_logs
from storage.results import with_result

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

Args = Annotated[dict[str, Any] | None, Body(description="the job's args: a JSON object")]
MAX_WAIT_S = 600


class RunQuery:
    """The query parameters every run endpoint takes."""

    def __init__(
        self,
        scheduled_for: Annotated[str | None, Query(description="ISO 8601 or epoch ms")] = None,
        scheduled_in_secs: Annotated[int | None, Query(ge=0, le=10 * 365 * 86400)] = None,
        job_id: Annotated[str | None, Query(description="your own UUID; never run twice")] = None,
        tag: Annotated[str | None, Query(max_length=64)] = None,
        timeout_s: Annotated[int | None, Query(gt=0, le=7 * 86400)] = None,
        permissioned_as: Annotated[str | None, Query(max_length=130)] = None,
    ) -> None:
        self.scheduled_for = scheduled_for
        self.scheduled_in_secs = scheduled_in_secs
        self.job_id = job_id
        self.tag = tag
        self.timeout_s = timeout_s
        self.permissioned_as = permissioned_as

    def spec_fields(self, svc: Services) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.scheduled_for is not None:
            try:
                fields["scheduled_for"] = parse_time(self.scheduled_for)
            except ValueError as exc:
                raise GristmillError(f"scheduled_for: {exc}") from None
        elif self.scheduled_in_secs is not None:
            fields["scheduled_for"] = svc.store.clock() + self.scheduled_in_secs * 1000
        for key in ("tag", "timeout_s", "permissioned_as"):
            if getattr(self, key) is not None:
                fields[key] = getattr(self, key)
        if self.job_id is not None:
            fields["id"] = self.job_id
        return fields


def may_see(context: AuthContext, created_by: str | None, permissioned_as: str | None) -> bool:
    """Users see their own jobs, their groups' jobs, jobs run as them; admins see all."""
    principal = context.principal
    return (principal.is_admin or (created_by is not None and created_by == principal.name)
            or permissioned_as in principal.identities)


def visible_job(svc: Services, context: AuthContext, job_id: str) -> Job:
    """The job, if the caller may see it; a damaged record is BadRecord (a 500 naming the job
    and the field) for those who may see it, judged from its raw owner fields."""
    try:
        job = svc.store.get_job(job_id)
    except BadRecord:
        if not may_see(context, *svc.store.owners(job_id)):
            raise NotFound(f"no job {job_id}") from None
        raise
    if not may_see(context, job.created_by, job.permissioned_as):
        raise NotFound(f"no job {job_id}")  # do not tell others it exists
    return with_result(svc.objects, job)


def submit(svc: Services, context: AuthContext, fields: dict[str, Any]) -> Job:
    spec: JobSpec = parse_spec(fields)
    return svc.admission.submit(
        spec, principal=context.principal, trusted=False, parent_job=context.token.job_id
    )


def wait_result(svc: Services, context: AuthContext, job: Job, wait_s: float) -> Any:
    """The job's result once it succeeded (a flow's early result as soon as it answers)."""
    try:
        if job.kind in (Kind.FLOW, Kind.FLOWPREVIEW):
            done, answered, early = svc.flow_jobs.wait_early(svc.store, job.id, wait_s)
            if answered:
                return early
            done = with_result(svc.objects, done)
        else:
            done = with_result(svc.objects, svc.store.wait(job.id, wait_s))
    except JobTimeout:
        raise JobTimeout(
            f"job {job.id} did not complete within {wait_s:g} s; it keeps running: "
            f"GET /api/jobs/{job.id}/result later"
        ) from None
    if done.status != Status.SUCCESS:
        error = done.error or {}
        raise GristmillError(
            f"job {job.id} ended {done.status.value}: {error.get('name', '')}: "
            f"{error.get('message', done.canceled_reason or '')}"
        )
    return done.result


WaitS = Annotated[float, Query(gt=0, le=MAX_WAIT_S, description="how long to wait for the result")]


@router.post("/run/p/{path:path}", response_class=PlainTextResponse)
def run_path(path: str, svc: Svc, context: Auth, q: Annotated[RunQuery, Depends()], args: Args = None) -> str:
    """Run the latest version of the script at ``path``; the body is its args. Returns the job id."""
    return submit(svc, context, {"path": path, "args": args or {}, **q.spec_fields(svc)}).id


@router.post("/run/h/{script_hash}", response_class=PlainTextResponse)
def run_hash(script_hash: str, svc: Svc, context: Auth, q: Annotated[RunQuery, Depends()],
             args: Args = None) -> str:
    """Run exactly the script version ``script_hash``. Returns the job id."""
    return submit(svc, context, {"hash": script_hash, "args": args or {}, **q.spec_fields(svc)}).id


class PreviewBody(BaseModel):
    """Raw code to run: the inbox spec's field names."""

    model_config = ConfigDict(extra="forbid")

    code: str
    language: str
    args: dict[str, Any] = {}


@router.post("/run/preview", response_class=PlainTextResponse)
def run_preview(body: PreviewBody, svc: Svc, context: Auth, q: Annotated[RunQuery, Depends()]) -> str:
    """Run raw code as a preview job. Returns the job id."""
    fields = {"code": body.code, "language": body.language, "args": body.args}
    return submit(svc, context, {**fields, **q.spec_fields(svc)}).id


@router.post("/run_wait_result/p/{path:path}")
def run_wait_path(path: str, svc: Svc, context: Auth, q: Annotated[RunQuery, Depends()],
                  wait_s: WaitS = 60, args: Args = None) -> Any:
    """Run the script at ``path`` and answer its result (408 if it takes longer than wait_s)."""
    job = submit(svc, context, {"path": path, "args": args or {}, **q.spec_fields(svc)})
    return wait_result(svc, context, job, wait_s)


@router.post("/run_wait_result/h/{script_hash}")
def run_wait_hash(script_hash: str, svc: Svc, context: Auth, q: Annotated[RunQuery, Depends()],
                  wait_s: WaitS = 60, args: Args = None) -> Any:
    """Run the version ``script_hash`` and answer its result."""
    job = submit(svc, context, {"hash": script_hash, "args": args or {}, **q.spec_fields(svc)})
    return wait_result(svc, context, job, wait_s)


@router.post("/run_wait_result/preview")
def run_wait_preview(body: PreviewBody, svc: Svc, context: Auth,
                     q: Annotated[RunQuery, Depends()], wait_s: WaitS = 60) -> Any:
    """Run raw code and answer its result."""
    fields = {"code": body.code, "language": body.language, "args": body.args}
    job = submit(svc, context, {**fields, **q.spec_fields(svc)})
    return wait_result(svc, context, job, wait_s)


def job_view(svc: Services, job: Job) -> dict[str, Any]:
    """The record with DESIGN.md's field names, args/result/error decoded, plus attempts."""
    data = job.public()
    data["attempts"] = svc.store.attempts(job)
    return data


def viewer_of(context: AuthContext) -> Viewer:
    """What the caller may list: every job for an admin, else his own and his identities'."""
    principal = context.principal
    if principal.is_admin:
        return EVERYONE
    return Viewer(user=principal.name, identities=principal.identities)


class ListQuery:
    """The filters of a job listing (the API's and the UI's)."""

    def __init__(
        self,
        kind: Kind | None = None, status: Status | None = None,
        path: Annotated[str | None, Query(max_length=300, description="script path")] = None,
        group: Annotated[str | None, Query(max_length=64)] = None,
        created_by: Annotated[str | None, Query(max_length=130)] = None,
        permissioned_as: Annotated[str | None, Query(max_length=130)] = None,
        tag: Annotated[str | None, Query(max_length=64)] = None,
        schedule: Annotated[str | None, Query(max_length=300, description="schedule path")] = None,
        root: Annotated[str | None, Query(max_length=64, description="root flow job id")] = None,
        created_after: Annotated[str | None, Query(description="ISO 8601 or epoch ms")] = None,
        created_before: Annotated[str | None, Query(description="ISO 8601 or epoch ms")] = None,
    ) -> None:
        try:
            after = parse_time(created_after) if created_after else None
            before = parse_time(created_before) if created_before else None
        except ValueError as exc:
            raise GristmillError(f"created_after/created_before: {exc}") from None
        self.filter = JobFilter(
            status=status, kind=kind, path=path or None, group=group or None,
            created_by=created_by or None, permissioned_as=permissioned_as or None,
            tag=tag or None, schedule=schedule or None, root=root or None,
            created_after=after, created_before=before,
        )


Cursor = Annotated[str | None, Query(max_length=120, pattern=r"^[0-9]{13}:[0-9A-Za-z-]{1,100}$",
                                     description="next_cursor of the previous page")]


@router.get("")
def list_jobs(
    svc: Svc, context: Auth, response: Response, q: Annotated[ListQuery, Depends()],
    cursor: Cursor = None, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """Jobs the caller may see, newest first. The ``X-Next-Cursor`` header, when present,
    is the ``cursor`` of the next page (a page may be short when a filter is sparse)."""
    page = list_page(svc.store, q.filter, viewer=viewer_of(context), cursor=cursor, limit=limit)
    if page.next_cursor is not None:
        response.headers["X-Next-Cursor"] = page.next_cursor
    if page.damaged:
        # Left out of the page; GET /api/jobs/{id} says what is wrong with each.
        response.headers["X-Damaged-Jobs"] = ",".join(quote(d.job_id, safe="") for d in page.damaged)
    return [job.public() for job in page.jobs]


@router.get("/counts")
def job_counts(svc: Svc, context: Auth, q: Annotated[ListQuery, Depends()]
               ) -> dict[str, dict[str, int]]:
    """Jobs per status and per kind, read from index sizes (no scan). A user who is not an
    admin gets his own per ``live`` (queued + running), ``success``, ``failure``,
    ``canceled``: the jobs run as him or his groups. Honours ``group`` and the
    creation-time range; other filters are ignored."""
    return counts(svc.store, q.filter, viewer_of(context))


@router.get("/{job_id}")
def get_job(job_id: str, svc: Svc, context: Auth) -> dict[str, Any]:
    """The job record, decoded."""
    return job_view(svc, visible_job(svc, context, job_id))


@router.get("/{job_id}/result")
def get_result(job_id: str, svc: Svc, context: Auth) -> dict[str, Any]:
    """``{"status", "result"}`` or ``{"status", "error"}``; status ``queued``/``running`` while not done."""
    job = visible_job(svc, context, job_id)
    answer: dict[str, Any] = {"id": job.id, "status": job.status.value}
    if job.status == Status.SUCCESS:
        answer["result"] = job.result
    elif job.is_terminal:
        answer["error"] = job.error
        if job.status == Status.CANCELED:
            answer["canceled_by"], answer["canceled_reason"] = job.canceled_by, job.canceled_reason
    return answer


def _entry(entry: LogEntry) -> dict[str, Any]:
    return {"attempt": entry.attempt, "ts": entry.ts_ms, "stream": entry.stream, "line": entry.line}


@router.get("/{job_id}/logs", response_model=None)
def get_logs(job_id: str, svc: Svc, context: Auth, follow: bool = False
             ) -> list[dict[str, Any]] | StreamingResponse:
    """The job's log lines; ``?follow=1`` streams them as server-sent events until it completes."""
    visible_job(svc, context, job_id)
    if not follow:
        return [_entry(entry) for entry in read_logs(svc.store, svc.objects, job_id)]

    def events() -> Iterator[str]:
        try:
            for entry in read_logs(svc.store, svc.objects, job_id, follow=True):
                yield f"data: {json.dumps(_entry(entry))}\n\n"
            status = svc.store.get_job(job_id).status.value
        except BadRecord as exc:  # damaged while followed: the stream is past its 200
            yield f"event: error\ndata: {json.dumps(error_body(str(exc)))}\n\n"
            return
        yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = ""


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, svc: Svc, context: Auth, body: CancelBody | None = None) -> dict[str, str]:
    """Cancel a queued job at once, or ask a running job's worker to stop it."""
    visible_job(svc, context, job_id)
    outcome = svc.cancel(job_id, reason=body.reason if body else "", by=context.principal.name)
    return {"id": job_id, "outcome": outcome}
