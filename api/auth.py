"""Bearer-token authentication, as a FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.services import Services
from common.errors import AuthError, NotFound, PermissionDenied
from common.identity import AuthContext

bearer = HTTPBearer(auto_error=False, description="An API token, or a job's WM_TOKEN")


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]


def authenticate(
    svc: Svc, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> AuthContext:
    """Who is calling: an API token's owner, or a running job's permissioned_as."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError("missing bearer token: send `Authorization: Bearer <token>`")
    context = svc.identity.authenticate(credentials.credentials)
    if context.token.kind == "job" and context.token.job_id:
        # A WM_TOKEN stops working when its job completes, even if revocation was missed.
        try:
            job = svc.gm.get_job(context.token.job_id)
        except NotFound:
            raise AuthError("this job token's job no longer exists") from None
        if job.is_terminal:
            raise AuthError("this job token expired: its job has completed")
    return context


Auth = Annotated[AuthContext, Depends(authenticate)]


def require_admin(context: Auth) -> AuthContext:
    if not context.principal.is_admin:
        raise PermissionDenied(f"{context.principal.name} is not an admin")
    return context


def require_api_token(context: Auth) -> AuthContext:
    """Refuse job tokens: a job may not manage identities or mint long-lived tokens."""
    if context.token.kind != "api":
        raise PermissionDenied("a job token cannot do this; use an API token")
    return context


Admin = Annotated[AuthContext, Depends(require_admin)]
ApiUser = Annotated[AuthContext, Depends(require_api_token)]
