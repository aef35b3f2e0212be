"""Flows over HTTP: deploy and read versions, run a flow or a preview flow, its steps, approvals."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Auth, Svc
from api.routes.jobs import RunQuery, WaitS, submit, visible_job, wait_result
from api.routes.scripts import check, readable
from api.services import Services
from auth.identity import AuthContext
from auth.permissions import require_author
from common.errors import NotFound, PermissionDenied
from common.models import Job
from flows.approvals import FLOW_KINDS
from flows.steps import StepRow
from flows.versions import FlowVersion

router = APIRouter(prefix="/api", tags=["flows"])

Args = Annotated[dict[str, Any] | None, Body(description="the flow's args: a JSON object")]
Payload = Annotated[Any, Body(description="the resume payload, seen by the next step as `resume`")]


class NewFlow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(max_length=300)
    value: dict[str, Any] = Field(description="the OpenFlow document (summary, value, schema)")


class PreviewFlowBody(BaseModel):
    """A raw flow to run (Windmill's preview_flow body)."""

    model_config = ConfigDict(extra="forbid")
    value: dict[str, Any]
    args: dict[str, Any] = {}


def flow_view(version: FlowVersion) -> dict[str, Any]:
    return {"hash": version.hash, "path": version.path, "created_at": version.created_at,
            "created_by": version.created_by,
            "value": version.flow.model_dump(mode="json", by_alias=True, exclude_none=True)}


@router.post("/flows", status_code=201)
def create_flow(body: NewFlow, svc: Svc, context: Auth) -> dict[str, Any]:
    """Save a new immutable flow version at ``path`` (write permission on it; not operators)."""
    require_author(context.principal, "deploy flows")
    check(svc, context, "write", body.path)
    version, created = svc.flow_jobs.versions.deploy(body.path, body.value, created_by=context.principal.name)
    return {**flow_view(version), "created": created}


@router.get("/flows")
def list_flows(svc: Svc, context: Auth) -> list[dict[str, str]]:
    """Flow paths the caller may read, with their latest hash."""
    return [{"path": path, "hash": digest} for path, digest in svc.flow_jobs.versions.all_paths().items()
            if readable(svc, context, path)]


@router.get("/flows/p/{path:path}")
def get_flow(path: str, svc: Svc, context: Auth) -> dict[str, Any]:
    if not readable(svc, context, path):
        raise NotFound(f"no flow at path {path!r}")
    return flow_view(svc.flow_jobs.versions.latest(path))


@router.get("/flows/h/{flow_hash}")
def get_flow_by_hash(flow_hash: str, svc: Svc, context: Auth) -> dict[str, Any]:
    version = svc.flow_jobs.versions.by_hash(flow_hash)
    if not readable(svc, context, version.path):
        raise NotFound(f"no flow version with hash {flow_hash}")
    return flow_view(version)


@router.get("/flows/history/{path:path}")
def flow_history(path: str, svc: Svc, context: Auth) -> list[str]:
    if not readable(svc, context, path):
        raise NotFound(f"no flow at path {path!r}")
    return svc.flow_jobs.versions.history(path)


# -- running ---------------------------------------------------------------------------------


@router.post("/jobs/run/f/{path:path}", response_class=PlainTextResponse)
def run_flow(path: str, svc: Svc, context: Auth, q: Annotated[RunQuery, Depends()], args: Args = None) -> str:
    """Run the latest version of the flow at ``path``; the body is its args. Returns the job id."""
    return submit(svc, context, {"flow_path": path, "args": args or {}, **q.spec_fields(svc)}).id


@router.post("/jobs/run/preview_flow", response_class=PlainTextResponse)
def run_preview_flow(body: PreviewFlowBody, svc: Svc, context: Auth,
                     q: Annotated[RunQuery, Depends()]) -> str:
    """Run a raw flow (``{"value": <OpenFlow>, "args": {...}}``). Returns the job id."""
    return submit(svc, context, {"flow": body.value, "args": body.args, **q.spec_fields(svc)}).id


@router.post("/jobs/run_wait_result/f/{path:path}")
def run_wait_flow(path: str, svc: Svc, context: Auth, q: Annotated[RunQuery, Depends()],
                  wait_s: WaitS = 60, args: Args = None) -> Any:
    """Run the flow at ``path`` and answer its result (408 if it takes longer than wait_s)."""
    job = submit(svc, context, {"flow_path": path, "args": args or {}, **q.spec_fields(svc)})
    return wait_result(svc, context, job, wait_s)


@router.post("/jobs/run_wait_result/preview_flow")
def run_wait_preview_flow(body: PreviewFlowBody, svc: Svc, context: Auth,
                          q: Annotated[RunQuery, Depends()], wait_s: WaitS = 60) -> Any:
    """Run a raw flow and answer its result."""
    job = submit(svc, context, {"flow": body.value, "args": body.args, **q.spec_fields(svc)})
    return wait_result(svc, context, job, wait_s)


# -- a flow job's steps and approvals --------------------------------------------------------


def visible_flow(svc: Services, context: AuthContext, flow_id: str) -> Job:
    job = visible_job(svc, context, flow_id)
    if job.kind not in FLOW_KINDS:
        raise NotFound(f"job {flow_id} is not a flow")
    return job


def row_view(row: StepRow) -> dict[str, Any]:
    return {"depth": row.depth, "addr": row.addr, "label": row.label, "status": row.status,
            "job": row.job, "attempts": row.attempts, "branch_chosen": row.branch_chosen,
            "iteration": row.iteration, "error": row.error}


@router.get("/jobs/{flow_id}/flow")
def flow_status(flow_id: str, svc: Svc, context: Auth) -> dict[str, Any]:
    """The flow job's status and its steps as rows of a tree; the steps waiting for approval."""
    job = visible_flow(svc, context, flow_id)
    return {"id": job.id, "status": job.status.value,
            "steps": [row_view(row) for row in svc.flow_jobs.steps(flow_id)],
            "waiting": sorted(svc.approvals.waiting(job))}


@router.get("/jobs/flows/{flow_id}/resume_urls/{step:path}")
def get_resume_urls(flow_id: str, step: str, svc: Svc, context: Auth) -> dict[str, str]:
    """A fresh pair of signed URLs for one approver of a suspended step (``resume``, ``cancel``)."""
    _not_a_job(context)
    job = visible_flow(svc, context, flow_id)
    return svc.approvals.urls(job, step, base_url=svc.settings.base_url)


@router.get("/jobs/resume_urls/{job_id}")
def get_step_resume_urls(job_id: str, svc: Svc, context: Auth) -> dict[str, str]:
    """Signed URLs (``resume``, ``cancel``) for the suspend after a running step, asked by the step
    itself with its WM_TOKEN (``gristmill.get_resume_urls()``), or by a user who may see it."""
    if context.token.job_id is not None and context.token.job_id != job_id:
        raise PermissionDenied("a job gets the resume URLs of its own step only")
    step = visible_job(svc, context, job_id)
    return svc.approvals.urls_for_step(step, base_url=svc.settings.base_url)


def _not_a_job(context: AuthContext) -> None:
    """A job's token asks for its own step's URLs only (/jobs/resume_urls/<its id>)."""
    if context.token.job_id is not None:
        raise PermissionDenied("a job gets the resume URLs of its own step only: "
                               "gristmill.get_resume_urls() in the step's code")


def _signed(flow_id: str, action: str, step: str, svc: Services, nonce: str, expires: int,
            signature: str, payload: Any) -> dict[str, str]:
    if action not in ("resume", "cancel"):
        raise NotFound(f"no flow action {action!r}; resume URLs end in resume or cancel")
    verb: Literal["resume", "cancel"] = "resume" if action == "resume" else "cancel"
    svc.approvals.by_url(flow_id, verb, step, nonce=nonce, expires=expires, signature=signature,
                         payload=payload)
    return {"flow": flow_id, "step": step, "done": verb}


Nonce = Annotated[str, Query(max_length=64)]
Signature = Annotated[str, Query(max_length=128)]


@router.get("/jobs/flows/{flow_id}/{action}/{step:path}")
def signed_url_get(flow_id: str, action: str, step: str, svc: Svc, nonce: Nonce, expires: int,
                   signature: Signature) -> dict[str, str]:
    """A signed resume or cancel URL, opened (no sign-in: the signature is the permission)."""
    return _signed(flow_id, action, step, svc, nonce, expires, signature, None)


@router.post("/jobs/flows/{flow_id}/{action}/{step:path}")
def signed_url_post(flow_id: str, action: str, step: str, svc: Svc, nonce: Nonce, expires: int,
                    signature: Signature, payload: Payload = None) -> dict[str, str]:
    """A signed resume or cancel URL, posted with a payload (the next step's ``resume``)."""
    return _signed(flow_id, action, step, svc, nonce, expires, signature, payload)


@router.post("/jobs/{flow_id}/approve/{step:path}")
def approve(flow_id: str, step: str, svc: Svc, context: Auth, payload: Payload = None) -> dict[str, str]:
    """Approve a suspended step as the signed-in user (who may see the flow)."""
    job = visible_flow(svc, context, flow_id)
    svc.approvals.by_user(job, step, context.principal, approved=True, payload=payload)
    return {"flow": flow_id, "step": step, "done": "approve"}


@router.post("/jobs/{flow_id}/reject/{step:path}")
def reject(flow_id: str, step: str, svc: Svc, context: Auth, payload: Payload = None) -> dict[str, str]:
    """Reject (disapprove) a suspended step as the signed-in user: the step fails."""
    job = visible_flow(svc, context, flow_id)
    svc.approvals.by_user(job, step, context.principal, approved=False, payload=payload)
    return {"flow": flow_id, "step": step, "done": "reject"}
