"""The web UI: server-rendered pages (Jinja2) and a little vanilla JavaScript.

No front-end build: the templates and ``static/`` ship in the package, so a
fresh clone serves the UI with nothing else installed. Every page reads through
the same code as the HTTP API with the signed-in user's permissions: the runs
page lists from the user's own indexes, a job page answers 404 for a job the
user may not see, exactly as ``GET /api/jobs/<id>``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlencode

import anyio.to_thread
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates

from api.auth import Svc
from api.routes.jobs import submit, viewer_of, visible_job
from api.routes.scripts import check, readable
from api.services import Services
from api.ui import views
from api.ui.session import (
    COOKIE,
    SESSION_S,
    Session,
    check_csrf,
    sign_in_password,
    sign_in_token,
    sign_out,
)
from auth.identity import AuthContext
from auth.permissions import can
from common.errors import BadRecord, GristmillError, NotFound, SpecError
from common.models import Job, Kind, Status
from common.queries import JobFilter, counts, list_page
from flows.approvals import FLOW_KINDS
from jobs.signature import NO_DEFAULT, Param, python_params
from jobs.spec import parse_time
from storage.logs import read_logs, stream_id

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["ts"] = views.fmt_ts
templates.env.filters["duration"] = views.fmt_duration
router = APIRouter(include_in_schema=False)

TABS = [("all", "All"), *((k.value, k.value) for k in Kind)]
FILTER_FIELDS = ("status", "path", "created_by", "permissioned_as", "group", "tag", "schedule",
                 "created_after", "created_before")
PAGE_SIZES = (25, 50, 100)
LOG_LINES_SHOWN = 20_000


def render(request: Request, name: str, context: AuthContext | None, status_code: int = 200,
           **data: Any) -> HTMLResponse:
    context = context or getattr(request.state, "context", None)
    user = context.principal if context else None
    return templates.TemplateResponse(request, name, {
        "user": user, "csrf": getattr(request.state, "csrf", ""), **data,
    }, status_code=status_code)


def safe_next(raw: str) -> str:
    """Only paths of this site: never an open redirect."""
    target = unquote(raw or "/runs")
    return target if target.startswith("/") and not target.startswith("//") else "/runs"


# -- sign in ---------------------------------------------------------------------------------


@router.get("/signin")
def signin_form(request: Request, next: str = "/runs") -> HTMLResponse:
    return render(request, "signin.html", None, next=safe_next(next), error="")


@router.post("/signin", response_model=None)
def signin(
    request: Request, svc: Svc,
    user: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/runs",
) -> Response:
    try:
        if token:
            value = sign_in_token(svc, token)
        elif user and password:
            value = sign_in_password(svc, user, password)
        else:
            raise SpecError("give a user name and password, or an API token")
    except GristmillError as exc:
        # 200, not 401: the form is shown again (a 4xx would be a console error in browsers).
        return render(request, "signin.html", None, next=safe_next(next), error=str(exc))
    answer = RedirectResponse(safe_next(next), status_code=303)
    answer.set_cookie(COOKIE, value, max_age=SESSION_S, httponly=True, samesite="strict",
                      secure=request.url.scheme == "https", path="/")
    return answer


@router.post("/signout")
def signout(request: Request, svc: Svc, context: Session,
            csrf: Annotated[str, Form(max_length=64)] = "") -> RedirectResponse:
    check_csrf(request, csrf)
    sign_out(svc, request.cookies.get(COOKIE))
    answer = RedirectResponse("/signin", status_code=303)
    answer.delete_cookie(COOKIE, path="/")
    return answer


# -- runs ------------------------------------------------------------------------------------


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/runs", status_code=303)


def read_filter(params: dict[str, str], kind: str) -> JobFilter:
    """The runs page's query string as a JobFilter; SpecError names a bad field."""
    def time_of(name: str) -> int | None:
        raw = params.get(name, "")
        if not raw:
            return None
        try:
            return parse_time(raw)
        except ValueError as exc:
            raise SpecError(f"{name.replace('_', ' ')}: {exc}") from None

    status = params.get("status") or None
    if status is not None and status not in {s.value for s in Status}:
        raise SpecError(f"status: {status!r} is not one of {', '.join(s.value for s in Status)}")
    return JobFilter(
        status=Status(status) if status else None, kind=Kind(kind) if kind != "all" else None,
        path=params.get("path") or None, created_by=params.get("created_by") or None,
        permissioned_as=params.get("permissioned_as") or None, group=params.get("group") or None,
        tag=params.get("tag") or None, schedule=params.get("schedule") or None,
        created_after=time_of("created_after"), created_before=time_of("created_before"),
    )


@router.get("/runs")
def runs(request: Request, svc: Svc, context: Session, kind: str = "all",
         cursor: str | None = None, limit: int = 50, fragment: bool = False) -> HTMLResponse:
    if kind not in dict(TABS):
        raise NotFound(f"no tab {kind!r}")
    limit = limit if limit in PAGE_SIZES else 50
    params = {k: v.strip() for k, v in request.query_params.items() if k in FILTER_FIELDS}
    error = ""
    try:
        flt = read_filter(params, kind)
        page = list_page(svc.store, flt, viewer=viewer_of(context), cursor=cursor or None,
                                limit=limit)
    except GristmillError as exc:
        if not isinstance(exc, SpecError):
            raise
        flt, error = JobFilter(kind=Kind(kind) if kind != "all" else None), str(exc)
        page = list_page(svc.store, flt, viewer=viewer_of(context), limit=limit)
    now = svc.store.clock()
    kept = {k: v for k, v in params.items() if v}
    data: dict[str, Any] = {
        "tabs": TABS, "kind": kind, "jobs": page.jobs, "chart": views.chart(page.jobs, now),
        "damaged": page.damaged,
        "filters": kept, "statuses": [s.value for s in Status], "error": error,
        "next_url": "/runs?" + urlencode({**kept, "kind": kind, "limit": limit,
                                          "cursor": page.next_cursor}) if page.next_cursor else "",
        "first_url": "/runs?" + urlencode({**kept, "kind": kind, "limit": limit}),
        "paged": bool(cursor), "limit": limit, "page_sizes": PAGE_SIZES,
        "counts": counts(svc.store, flt, viewer_of(context)),
        "short_page": page.next_cursor is not None and len(page.jobs) < limit,
        "duration": lambda job: views.duration_of(job, now),
    }
    return render(request, "runs_results.html" if fragment else "runs.html", context, **data)


# -- one job ---------------------------------------------------------------------------------


def may_rerun(job: Job) -> bool:
    return job.kind in (Kind.SCRIPT, Kind.PREVIEW) and job.is_terminal and not job.raw_spec


def flow_graph(svc: Services, job: Job) -> dict[str, Any]:
    """A flow job's steps as rows of a tree and the steps waiting for approval (else no steps)."""
    if job.kind not in FLOW_KINDS:
        return {"steps": None, "waiting": set()}
    return {"steps": svc.flow_jobs.steps(job.id), "waiting": set(svc.approvals.waiting(job))}


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request, svc: Svc, context: Session) -> HTMLResponse:
    job = visible_job(svc, context, job_id)
    # A log's part in the object store is read in place of its marker (storage/logs.py).
    logs = list(itertools.islice(read_logs(svc.store, svc.objects, job_id), LOG_LINES_SHOWN))
    return render(
        request, "job.html", context, job=job, attempts=svc.store.attempts(job), logs=logs,
        **flow_graph(svc, job),
        last_log=stream_id(logs[-1].id) if logs else "0-0", may_rerun=may_rerun(job),
        duration=views.duration_of(job, svc.store.clock()),
        args_json=json.dumps(job.args, indent=2, ensure_ascii=False),
        result_json=json.dumps(job.result, indent=2, ensure_ascii=False, default=str),
    )


@router.get("/jobs/{job_id}/steps")
def flow_steps(job_id: str, request: Request, svc: Svc, context: Session) -> HTMLResponse:
    """The step graph alone, for a running flow's page to refresh."""
    job = visible_job(svc, context, job_id)
    return render(request, "flow_steps.html", context, job=job, **flow_graph(svc, job))


@router.post("/jobs/{job_id}/{verdict}/{step:path}")
def approval(job_id: str, verdict: str, step: str, request: Request, svc: Svc, context: Session,
             csrf: Annotated[str, Form(max_length=64)] = "") -> RedirectResponse:
    """Approve or reject a suspended flow step as the signed-in user."""
    check_csrf(request, csrf)
    if verdict not in ("approve", "reject"):
        raise NotFound(f"no such action {verdict!r}")
    job = visible_job(svc, context, job_id)
    if job.kind not in FLOW_KINDS:
        raise NotFound(f"job {job_id} is not a flow")
    svc.approvals.by_user(job, step, context.principal, approved=verdict == "approve")
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}/logs/stream")
def job_log_stream(job_id: str, request: Request, svc: Svc, context: Session,
                   after: str = "0-0") -> StreamingResponse:
    """Server-sent events: each new log line, then ``end`` with the final status.

    A browser reconnecting sends Last-Event-ID, so it gets no line twice."""
    visible_job(svc, context, job_id)
    after = request.headers.get("last-event-id", after)
    if not after.replace("-", "").isdigit():
        raise SpecError("after: a log stream id such as 1700000000000-0")

    def events() -> Iterator[str]:
        try:
            for entry in read_logs(svc.store, svc.objects, job_id, follow=True, after=after):
                line = {"id": entry.id, "stream": entry.stream, "line": entry.line,
                        "ts": entry.ts_ms}
                yield f"id: {stream_id(entry.id)}\ndata: {json.dumps(line)}\n\n"
            end = {"status": svc.store.get_job(job_id).status.value}
        except BadRecord as exc:  # damaged while followed: the page reloads onto the error
            end = {"error": str(exc)}
        yield f"event: end\ndata: {json.dumps(end)}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, request: Request, svc: Svc, context: Session,
           csrf: Annotated[str, Form(max_length=64)] = "") -> RedirectResponse:
    check_csrf(request, csrf)
    visible_job(svc, context, job_id)
    svc.cancel(job_id, reason="canceled from the web UI", by=context.principal.name)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@router.post("/jobs/{job_id}/rerun")
def rerun(job_id: str, request: Request, svc: Svc, context: Session,
          csrf: Annotated[str, Form(max_length=64)] = "") -> RedirectResponse:
    """The same code (script version or preview) with the same args, as the caller."""
    check_csrf(request, csrf)
    job = visible_job(svc, context, job_id)
    if not may_rerun(job):
        raise SpecError(f"a {job.kind.value} job cannot be re-run from here")
    fields: dict[str, Any] = {"args": job.args}
    if job.kind == Kind.SCRIPT:
        fields["hash"] = job.script_hash
    else:
        fields.update(code=job.code, language=job.language)
    if job.permissioned_as in context.principal.identities:
        fields["permissioned_as"] = job.permissioned_as
    return RedirectResponse(f"/jobs/{submit(svc, context, fields).id}", status_code=303)


# -- workers, schedules, scripts -------------------------------------------------------------


@router.get("/workers")
def workers(request: Request, svc: Svc, context: Session) -> HTMLResponse:
    groups = sorted(g.decode() for g in svc.redis.smembers(svc.keys.groups))
    found = svc.fleet.workers()
    pipe = svc.redis.pipeline(transaction=False)
    for group in groups:
        pipe.llen(svc.keys.group(group).ready)
        pipe.zcard(svc.keys.group(group).scheduled)
    for w in found:
        pipe.llen(svc.keys.group(w.group).running(w.worker_id))
    answers = pipe.execute()
    depth = {g: (answers[2 * i], answers[2 * i + 1]) for i, g in enumerate(groups)}
    running = {w.worker_id: answers[2 * len(groups) + i] for i, w in enumerate(found)}
    rows = views.worker_rows(found, running, svc.store.clock())
    return render(request, "workers.html", context, groups=groups, depth=depth, workers=rows,
                  live={g: sum(1 for r in rows if r["group"] == g) for g in groups})


@router.get("/schedules")
def schedules(request: Request, svc: Svc, context: Session) -> HTMLResponse:
    shown = []
    for schedule in svc.schedules.all():
        acl, folder = svc.identity.access(schedule.path)
        if not can(context.principal, "read", schedule.path, acl, folder):
            continue
        fires = views.upcoming(schedule.cron, schedule.tz,
                               None if schedule.paused else schedule.next_fire)
        shown.append({"s": schedule, "runs": svc.schedules.runs(schedule.path, limit=5),
                      "fires": fires,
                      "writable": can(context.principal, "write", schedule.path, acl, folder)})
    return render(request, "schedules.html", context, schedules=shown)


@router.post("/schedules/{action}/{path:path}")
def schedule_action(action: str, path: str, request: Request, svc: Svc, context: Session,
                    csrf: Annotated[str, Form(max_length=64)] = "") -> RedirectResponse:
    check_csrf(request, csrf)
    if action not in ("pause", "resume"):
        raise NotFound(f"no schedule action {action!r}")
    check(svc, context, "write", path)
    getattr(svc.schedules, action)(path)
    return RedirectResponse("/schedules", status_code=303)


@router.get("/scripts")
def scripts(request: Request, svc: Svc, context: Session) -> HTMLResponse:
    paths = sorted((p, h) for p, h in svc.scripts.all_paths().items()
                   if readable(svc, context, p))
    return render(request, "scripts.html", context, scripts=paths)


@router.get("/scripts/p/{path:path}")
def script_page(path: str, request: Request, svc: Svc, context: Session) -> HTMLResponse:
    check(svc, context, "read", path)
    latest = svc.scripts.latest(path)
    versions = [svc.scripts.by_hash(h) for h in reversed(svc.scripts.history(path))]
    params = python_params(latest.code) if latest.language == "python3" else None
    acl, folder = svc.identity.access(path)
    return render(request, "script.html", context, script=latest, versions=versions,
                  params=params, no_default=NO_DEFAULT, error="",
                  runnable=can(context.principal, "run", path, acl, folder))


def form_args(params: list[Param] | None, form: dict[str, str]) -> dict[str, Any]:
    """The run form's fields as the job's args, typed by ``main``'s annotations."""
    if params is None:
        text = form.get("args_json", "").strip() or "{}"
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise SpecError(f"args: not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise SpecError("args: a JSON object, e.g. {\"name\": \"Ada\"}")
        return value
    args: dict[str, Any] = {}
    for p in params:
        raw = form.get(f"arg_{p.name}")
        if p.input_type == "checkbox":
            args[p.name] = raw is not None
            continue
        if raw is None or raw == "":
            if p.required:
                raise SpecError(f"{p.name} is required")
            continue
        args[p.name] = _typed(p, raw)
    return args


def _typed(p: Param, raw: str) -> Any:
    """One form field as ``main`` expects it: number, JSON value or text."""
    try:
        if p.annotation == "int":
            return int(raw)
        if p.annotation == "float":
            return float(raw)
        return json.loads(raw) if p.is_json else raw
    except ValueError:
        raise SpecError(f"{p.name}: {raw!r} is not a valid {p.annotation}") from None


@router.post("/scripts/p/{path:path}", response_model=None)
async def run_script(path: str, request: Request, svc: Svc, context: Session) -> Response:
    """The run form: its fields are named after main's parameters, so they are read here."""
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    check_csrf(request, form.get("csrf", ""))

    def run() -> Response:  # blocking Redis calls: off the event loop
        latest = svc.scripts.latest(path)
        params = python_params(latest.code) if latest.language == "python3" else None
        try:
            job = submit(svc, context, {"path": path, "args": form_args(params, form)})
        except SpecError as exc:
            versions = [svc.scripts.by_hash(h) for h in reversed(svc.scripts.history(path))]
            # 200: the form is shown again with the error (a 4xx is a browser console error).
            return render(request, "script.html", context, script=latest, versions=versions,
                          params=params, no_default=NO_DEFAULT, error=str(exc), runnable=True)
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    return await anyio.to_thread.run_sync(run)
