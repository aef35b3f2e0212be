"""Signed job tokens: a WM_TOKEN that costs no Redis write to mint or to revoke.

A signed job token is ``gmj_<payload>.<signature>``: the payload (base64url
JSON) names the job, its attempt's ``claim``, ``permissioned_as``, the
creator and the expiry; the signature is HMAC-SHA256 under the instance's job
token key (``gm:{auth}:jobtoken-key``, 32 random bytes made once, readable only
with Redis credentials, which job code never has). It is live while its
signature is good, it has not expired, and its job is ``running`` under that
very claim (``common/authn.require_live`` reads the record, as it did for
stored tokens): so it dies with its attempt, whatever ends it (completion,
cancel, a worker presumed dead whose job was given to another attempt), and
nothing has to be deleted. Pure functions here; the key is read by
``TokenStore``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

JOB_PREFIX = "gmj_"
KEY_BYTES = 32
MAX_SIGNED_LENGTH = 2048


@dataclass(frozen=True)
class JobClaims:
    """What a signed job token says."""

    job_id: str
    claim: str
    permissioned_as: str
    created_by: str | None
    created_at: int
    expires_at: int


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def sign(key: bytes, claims: JobClaims) -> str:
    """The token for ``claims``."""
    body = json.dumps({"j": claims.job_id, "c": claims.claim, "a": claims.permissioned_as,
                       "b": claims.created_by, "t": claims.created_at, "e": claims.expires_at},
                      separators=(",", ":")).encode()
    payload = _b64(body)
    return f"{JOB_PREFIX}{payload}.{_mac(key, payload)}"


def is_signed(token: str) -> bool:
    return token.startswith(JOB_PREFIX)


def verify(key: bytes, token: str) -> JobClaims | None:
    """The claims of a well-signed token, or None (bad shape or signature; expiry not checked)."""
    if not is_signed(token) or len(token) > MAX_SIGNED_LENGTH:
        return None
    payload, dot, signature = token[len(JOB_PREFIX):].partition(".")
    if not dot or not hmac.compare_digest(signature, _mac(key, payload)):
        return None
    try:
        data: Any = json.loads(_unb64(payload))
        return JobClaims(job_id=str(data["j"]), claim=str(data["c"]),
                         permissioned_as=str(data["a"]),
                         created_by=None if data["b"] is None else str(data["b"]),
                         created_at=int(data["t"]), expires_at=int(data["e"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None  # signed by us, so unreachable short of a key leak: refused all the same
