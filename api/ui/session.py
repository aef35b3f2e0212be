"""Web sign-in: a user's password or API token becomes an HttpOnly cookie holding an API token.

Signing in with a password mints a token labelled ``web session`` that expires
after ``SESSION_S`` and is revoked at sign-out; signing in with an API token
stores that token (it is not revoked at sign-out: it is the user's). Every
request re-checks the token exactly as the API does, so a revoked token, a
deleted or disabled user signs the browser out at once. Job tokens are refused.

The cookie is ``SameSite=Strict``; forms that change something also carry a
CSRF value derived from the token, checked on the server.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request

from api.auth import Svc
from api.services import Services
from auth.authn import require_live
from auth.identity import AuthContext
from common.errors import AuthError, GristmillError, PermissionDenied

COOKIE = "gm_session"
SESSION_S = 12 * 3600
SESSION_LABEL = "web session"
MINTED, PASTED = "s", "t"  # cookie prefixes: a token we minted, or one the user gave


class SignInRequired(GristmillError):
    """No valid session: the page redirects to the sign-in form."""

    def __init__(self, next_url: str) -> None:
        super().__init__("sign in first")
        self.next_url = next_url


def cookie_value(kind: str, token: str) -> str:
    return f"{kind}:{token}"


def split_cookie(value: str | None) -> tuple[str, str] | None:
    if not value or ":" not in value:
        return None
    kind, _, token = value.partition(":")
    return (kind, token) if kind in (MINTED, PASTED) and token else None


def csrf_value(token: str) -> str:
    """A value only the holder of the session token can compute."""
    return hmac.new(token.encode(), b"gristmill-csrf", hashlib.sha256).hexdigest()[:32]


def sign_in_password(svc: Services, user: str, password: str) -> str:
    """Check the password, mint a session token; the cookie value."""
    found = svc.identity.verify_password(user, password)
    expires = svc.store.clock() + SESSION_S * 1000
    token, _ = svc.identity.create_token(found.name, label=SESSION_LABEL, expires_at=expires)
    return cookie_value(MINTED, token)


def sign_in_token(svc: Services, token: str) -> str:
    """Check an API token; the cookie value."""
    context = svc.identity.authenticate(token.strip())
    if context.token.kind != "api":
        raise AuthError("sign in with an API token or a password, not a job token")
    return cookie_value(PASTED, token.strip())


def sign_out(svc: Services, value: str | None) -> None:
    """Revoke the session token if we minted it."""
    parsed = split_cookie(value)
    if parsed is None or parsed[0] != MINTED:
        return
    try:
        context = svc.identity.authenticate(parsed[1])
        svc.identity.revoke_token(context.token.owner, context.token.token_id)
    except GristmillError:
        pass  # already expired or revoked: nothing to undo


def session(request: Request, svc: Svc) -> AuthContext:
    """The signed-in user, or SignInRequired (the page then redirects to /signin)."""
    parsed = split_cookie(request.cookies.get(COOKIE))
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if parsed is None:
        raise SignInRequired(quote(here, safe=""))
    try:
        context = svc.identity.authenticate(parsed[1])
        require_live(context.token, svc.store)
    except AuthError:
        raise SignInRequired(quote(here, safe="")) from None
    if context.token.kind != "api":
        raise SignInRequired(quote(here, safe=""))
    request.state.csrf = csrf_value(parsed[1])
    request.state.context = context
    return context


def check_csrf(request: Request, sent: str) -> None:
    expected = getattr(request.state, "csrf", None)
    if not expected or not hmac.compare_digest(expected, sent):
        raise PermissionDenied("the form has expired; reload the page and try again")


Session = Annotated[AuthContext, Depends(session)]
