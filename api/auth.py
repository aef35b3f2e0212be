"""Bearer-token authentication, as a FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.services import Services
from auth.authn import require_live
from auth.identity import AuthContext
from common.errors import AuthError, PermissionDenied

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
    require_live(context.token, svc.store)
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


def require_identity_admin(context: Annotated[AuthContext, Depends(require_api_token)]
                           ) -> AuthContext:
    """An admin with an API token: a job run as an admin may not manage users or groups."""
    return require_admin(context)


Admin = Annotated[AuthContext, Depends(require_admin)]
ApiUser = Annotated[AuthContext, Depends(require_api_token)]
IdentityAdmin = Annotated[AuthContext, Depends(require_identity_admin)]
