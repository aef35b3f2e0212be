"""Variables (secrets included) and resources over HTTP, each checked for the caller."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Auth, Svc
from api.services import Services
from auth.identity import AuthContext

router = APIRouter(prefix="/api", tags=["variables and resources"])


class NewVariable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(max_length=300)
    value: str
    is_secret: bool | None = None
    description: str | None = None


class NewResource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(max_length=300)
    resource_type: str = Field(max_length=64)
    value: dict[str, Any]
    description: str | None = None


def _redact_key(svc: Services, context: AuthContext) -> str | None:
    """For a job token: where the secrets it reads are recorded, so its logs get redacted."""
    if context.token.kind != "job" or not context.token.job_id:
        return None
    job = svc.store.get_job(context.token.job_id)
    return svc.keys.group(job.group).redact(job.id)


@router.post("/variables", status_code=201)
def set_variable(body: NewVariable, svc: Svc, context: Auth) -> dict[str, str]:
    """Create or update a variable (write on its path); ``is_secret`` encrypts it at rest."""
    svc.vault.set_variable(context.principal, body.path, body.value, is_secret=body.is_secret,
                           description=body.description)
    return {"path": body.path}


@router.get("/variables")
def list_variables(svc: Svc, context: Auth) -> list[dict[str, Any]]:
    """Variables the caller may read; secret values are never listed."""
    return [dataclasses.asdict(v) for v in svc.vault.list_variables(context.principal)]


@router.get("/variables/meta/{path:path}")
def variable_meta(path: str, svc: Svc, context: Auth) -> dict[str, Any]:
    """A variable's metadata (a secret's value is left out)."""
    return dataclasses.asdict(svc.vault.get_variable_meta(context.principal, path))


@router.get("/variables/{path:path}")
def get_variable(path: str, svc: Svc, context: Auth) -> str:
    """The value (a secret decrypted) as a JSON string; read permission on the path."""
    return svc.vault.get_variable(context.principal, path,
                                  redact_into=_redact_key(svc, context))


@router.delete("/variables/{path:path}")
def delete_variable(path: str, svc: Svc, context: Auth) -> dict[str, str]:
    svc.vault.delete_variable(context.principal, path)
    return {"deleted": path}


@router.post("/resources", status_code=201)
def set_resource(body: NewResource, svc: Svc, context: Auth) -> dict[str, str]:
    """Create or update a typed JSON resource (write on its path)."""
    svc.vault.set_resource(context.principal, body.path, body.resource_type, body.value,
                           description=body.description)
    return {"path": body.path}


@router.get("/resources")
def list_resources(svc: Svc, context: Auth) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) for r in svc.vault.list_resources(context.principal)]


@router.get("/resources/{path:path}")
def get_resource(path: str, svc: Svc, context: Auth) -> dict[str, Any]:
    return dataclasses.asdict(svc.vault.get_resource(context.principal, path))


@router.delete("/resources/{path:path}")
def delete_resource(path: str, svc: Svc, context: Auth) -> dict[str, str]:
    svc.vault.delete_resource(context.principal, path)
    return {"deleted": path}
