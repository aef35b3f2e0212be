"""Scripts and schedules over HTTP: immutable versions at paths, cron schedules."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Auth, Svc
from api.services import Services
from auth.identity import AuthContext
from auth.permissions import Level, can, require, require_author
from common.errors import NotFound
from common.models import ScriptVersion
from schedules.store import Schedule

router = APIRouter(prefix="/api", tags=["scripts"])


def check(svc: Services, context: AuthContext, action: Level, path: str) -> None:
    acl, folder = svc.identity.access(path)
    require(context.principal, action, path, acl, folder)


def readable(svc: Services, context: AuthContext, path: str) -> bool:
    acl, folder = svc.identity.access(path)
    return can(context.principal, "read", path, acl, folder)


class NewScript(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(max_length=300)
    code: str = Field(max_length=4 * 1024 * 1024)
    language: str
    timeout_s: int | None = Field(default=None, gt=0, le=7 * 86400)
    retry: dict[str, Any] | None = None
    tag: str | None = Field(default=None, max_length=64)
    limits: dict[str, int] | None = Field(
        default=None, description="sandbox limits of its jobs (memory_mb, max_procs, file_mb, "
        "open_files, disk_mb); a worker applies the lower of these and its own")


def script_view(version: ScriptVersion) -> dict[str, Any]:
    """The version, with its lock state (``locked``, ``locking``, ``lock failed: <job>``) and
    its lockfile (``lock``) when it has one."""
    return {**version.model_dump(exclude_none=True), "lock_state": version.lock_state}


@router.post("/scripts", status_code=201)
def create_script(body: NewScript, svc: Svc, context: Auth) -> dict[str, Any]:
    """Save a new immutable version at ``path`` (write permission on the path; not operators)."""
    require_author(context.principal, "deploy scripts")
    check(svc, context, "write", body.path)
    version, created = svc.locker.deploy(
        body.path, body.language, body.code, created_by=context.principal.name,
        timeout_s=body.timeout_s, retry=body.retry, tag=body.tag, limits=body.limits,
    )
    return {**script_view(version), "created": created}


@router.get("/scripts")
def list_scripts(svc: Svc, context: Auth) -> list[dict[str, str]]:
    """Paths the caller may read, with their latest hash."""
    return [{"path": path, "hash": digest} for path, digest in svc.scripts.all_paths().items()
            if readable(svc, context, path)]


@router.get("/scripts/p/{path:path}")
def get_script(path: str, svc: Svc, context: Auth) -> dict[str, Any]:
    """The latest version at ``path``."""
    if not readable(svc, context, path):
        raise NotFound(f"no script at path {path!r}")
    return script_view(svc.scripts.latest(path))


@router.get("/scripts/h/{script_hash}")
def get_script_by_hash(script_hash: str, svc: Svc, context: Auth) -> dict[str, Any]:
    """One version by hash."""
    version = svc.scripts.by_hash(script_hash)
    if not readable(svc, context, version.path):
        raise NotFound(f"no script version with hash {script_hash}")
    return script_view(version)


@router.post("/scripts/h/{script_hash}/lock")
def relock_script(script_hash: str, svc: Svc, context: Auth) -> dict[str, Any]:
    """Resolve a python3 version's lock again (a new dependencies job; write on its path)."""
    require_author(context.principal, "lock scripts")
    version = svc.scripts.by_hash(script_hash)
    if not readable(svc, context, version.path):
        raise NotFound(f"no script version with hash {script_hash}")
    check(svc, context, "write", version.path)
    return script_view(svc.locker.relock(script_hash, created_by=context.principal.name))


@router.get("/scripts/history/{path:path}")
def script_history(path: str, svc: Svc, context: Auth) -> list[str]:
    """Every hash the path pointed at, oldest first."""
    if not readable(svc, context, path):
        raise NotFound(f"no script at path {path!r}")
    return svc.scripts.history(path)


class NewSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(max_length=300)
    script_path: str = Field(max_length=300)
    cron: str = Field(max_length=200)
    tz: str = Field(default="UTC", max_length=64)
    args: dict[str, Any] = {}
    no_overlap: bool = False
    paused: bool = False
    catch_up: str = "skip"


@router.post("/schedules", status_code=201)
def create_schedule(body: NewSchedule, svc: Svc, context: Auth) -> dict[str, Any]:
    """A cron schedule at ``path`` (write on it) running ``script_path`` (run on it) as the caller."""
    check(svc, context, "write", body.path)
    check(svc, context, "run", body.script_path)
    schedule = Schedule(**body.model_dump(), created_by=context.principal.name)
    return svc.schedules.create(schedule).model_dump()


@router.get("/schedules")
def list_schedules(svc: Svc, context: Auth) -> list[dict[str, Any]]:
    return [s.model_dump() for s in svc.schedules.all() if readable(svc, context, s.path)]


@router.get("/schedules/{path:path}")
def get_schedule(path: str, svc: Svc, context: Auth) -> dict[str, Any]:
    if not readable(svc, context, path):
        raise NotFound(f"no schedule at {path!r}")
    return {**svc.schedules.get(path).model_dump(), "runs": svc.schedules.runs(path)}


@router.post("/schedules/{action}/{path:path}")
def change_schedule(action: str, path: str, svc: Svc, context: Auth) -> dict[str, str]:
    """``pause``, ``resume`` or ``delete`` a schedule (write on its path)."""
    if action not in ("pause", "resume", "delete"):
        raise NotFound(f"no schedule action {action!r}; use pause, resume or delete")
    check(svc, context, "write", path)
    getattr(svc.schedules, action)(path)
    return {"path": path, "done": action}
