"""Users, groups, tokens, grants and instance settings over HTTP."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Admin, ApiUser, Auth, IdentityAdmin, Svc
from auth.identity import User
from auth.permissions import Level, Role, require
from common import instance
from common.errors import PermissionDenied

router = APIRouter(prefix="/api", tags=["identity and settings"])


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64)
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    role: Role = "developer"
    is_admin: bool = Field(default=False, description="Deprecated: the same as role admin.")


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(default="", max_length=200)
    expires_in_s: int | None = Field(default=None, gt=0, le=5 * 365 * 86400)


class Grant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(max_length=300)
    identity: str = Field(max_length=130)
    level: Level | None


class Member(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(max_length=64)


@router.get("/whoami")
def whoami(context: Auth) -> dict[str, Any]:
    """The caller's identity, groups and token."""
    principal = context.principal
    return {"name": principal.name, "groups": sorted(principal.groups), "role": principal.role,
            "is_admin": principal.is_admin, "token": dataclasses.asdict(context.token)}


@router.post("/users", status_code=201)
def create_user(body: NewUser, svc: Svc, context: IdentityAdmin) -> dict[str, Any]:
    """Admins create users, with a role (admin, developer, operator)."""
    role: Role = "admin" if body.is_admin else body.role
    return user_view(svc.identity.create_user(body.name, body.password, role=role))


@router.get("/users")
def list_users(svc: Svc, context: Admin) -> list[dict[str, Any]]:
    return [user_view(user) for user in svc.identity.list_users()]


def user_view(user: User) -> dict[str, Any]:
    return {**dataclasses.asdict(user), "is_admin": user.is_admin}


@router.delete("/users/{name}")
def delete_user(name: str, svc: Svc, context: IdentityAdmin) -> dict[str, str]:
    svc.identity.delete_user(name)
    return {"deleted": name}


@router.post("/groups/{name}", status_code=201)
def create_group(name: str, svc: Svc, context: IdentityAdmin) -> dict[str, str]:
    svc.identity.create_group(name, created_by=context.principal.name)
    return {"group": name}


@router.get("/groups")
def list_groups(svc: Svc, context: Auth) -> dict[str, list[str]]:
    """Groups and members: all for admins, the caller's own groups otherwise."""
    groups = svc.identity.list_groups()
    if context.principal.is_admin:
        return groups
    return {name: members for name, members in groups.items() if name in context.principal.groups}


@router.delete("/groups/{name}")
def delete_group(name: str, svc: Svc, context: IdentityAdmin) -> dict[str, str]:
    svc.identity.delete_group(name)
    return {"deleted": name}


@router.post("/groups/{name}/members")
def add_member(name: str, body: Member, svc: Svc, context: IdentityAdmin) -> dict[str, str]:
    svc.identity.add_member(name, body.user)
    return {"group": name, "added": body.user}


@router.delete("/groups/{name}/members/{user}")
def remove_member(name: str, user: str, svc: Svc, context: IdentityAdmin) -> dict[str, str]:
    svc.identity.remove_member(name, user)
    return {"group": name, "removed": user}


@router.post("/tokens", status_code=201)
def create_token(body: NewToken, svc: Svc, context: ApiUser) -> dict[str, Any]:
    """A new API token for the caller (never for a job token); its secret is shown only here."""
    user = context.principal.user
    if user is None:
        raise PermissionDenied("only users own API tokens")
    expires_at = (svc.store.clock() + body.expires_in_s * 1000) if body.expires_in_s else None
    plain, info = svc.identity.create_token(user, label=body.label, expires_at=expires_at)
    return {"token": plain, **dataclasses.asdict(info)}


@router.get("/tokens")
def list_tokens(svc: Svc, context: ApiUser) -> list[dict[str, Any]]:
    """The caller's API tokens (hashes only: secrets are never shown again)."""
    user = context.principal.user or ""
    return [dataclasses.asdict(t) for t in svc.identity.list_tokens(user)]


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: str, svc: Svc, context: ApiUser) -> dict[str, str]:
    svc.identity.revoke_token(context.principal.user or "", token_id)
    return {"revoked": token_id}


@router.post("/grants")
def set_grant(body: Grant, svc: Svc, context: ApiUser) -> dict[str, Any]:
    """Give (or with level null, take back) an identity's level on a path: write needed."""
    acl, folder = svc.identity.access(body.path)
    require(context.principal, "write", body.path, acl, folder)
    svc.identity.set_grant(body.path, body.identity, body.level)
    return body.model_dump()


@router.post("/folders/{name}", status_code=201)
def create_folder(name: str, svc: Svc, context: ApiUser) -> dict[str, str]:
    """A folder ``f/<name>/...`` owned by the caller (who becomes its first writer)."""
    svc.identity.create_folder(name, owner=context.principal.name)
    return {"folder": name}


@router.post("/folders/{name}/members")
def set_folder_member(name: str, identity: str, role: Literal["reader", "writer"] | None,
                      svc: Svc, context: ApiUser) -> dict[str, Any]:
    """Make an identity a reader or writer of a folder (folder writers and admins only)."""
    folder = svc.identity.get_folder(name)
    if not context.principal.is_admin and (
        folder is None or not (context.principal.identities & folder.writers)
    ):
        raise PermissionDenied(f"{context.principal.name} may not manage folder {name}")
    svc.identity.set_folder_member(name, identity, role)
    return {"folder": name, "identity": identity, "role": role}


@router.get("/settings")
def get_settings(svc: Svc, context: Auth) -> dict[str, Any]:
    return instance.load(svc.redis, svc.keys).model_dump()


@router.put("/settings/{key}")
def set_setting(key: str, value: str, svc: Svc, context: Admin) -> dict[str, str]:
    """Admins change an instance setting (``retention_s``, ``default_timeout_s``)."""
    return {key: instance.save_one(svc.redis, svc.keys, key, value)}
