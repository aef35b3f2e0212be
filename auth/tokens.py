"""API and job tokens: random secrets that Redis only ever sees as a SHA-256.

A token is ``gm_`` followed by 43 URL-safe characters (256 random bits). Its
record lives at ``token:<sha256>``; people name a token by its ``token_id``,
the first 12 hex digits of that hash, which is useless to an attacker. API
tokens belong to a user (``tokens:<user>`` lists them); job tokens (the
``WM_TOKEN`` of one running job) are bound to the job through
``jobtoken:<job id>`` and carry the job's ``permissioned_as``.

Checking who owns a token (exists, not disabled) is :mod:`auth.identity`'s
job; this module only answers "is this a live token, and whose".
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis

from auth import jobtokens
from common.clock import Clock, now_ms
from common.connection import redis_errors
from common.errors import AuthError, NotFound, SpecError
from common.keys import Keys
from common.paths import check_identity

PREFIX = "gm_"
ID_LENGTH = 12
MAX_TOKEN_LENGTH = 256
MAX_LABEL_LENGTH = 100
# last_used is a hint for people, not an audit log: one write a minute per token is enough.
LAST_USED_EVERY_MS = 60_000
UNKNOWN = "unknown or revoked token: ask for a new one (gristmill token create)"
EXPIRED = "token expired: ask for a new one (gristmill token create)"

TokenKind = Literal["api", "job"]


@dataclass(frozen=True)
class TokenInfo:
    """What is known of a token, never the token itself.

    ``owner`` is the user of an API token, or the ``permissioned_as`` identity
    of a job token; ``created_by`` the user who asked for a token's job (its
    role caps what the job may do).
    """

    token_id: str
    owner: str
    kind: TokenKind
    label: str
    created_at: int
    expires_at: int | None
    last_used: int | None
    job_id: str | None
    permissioned_as: str | None
    created_by: str | None = None
    claim: str | None = None  # a signed job token's attempt: live only while the job runs it


def new_secret() -> str:
    """A fresh token in plain text (shown once, never stored)."""
    return PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored.

    A plain hash, not a slow KDF: the secret has 256 random bits, so nothing
    can be guessed from its hash, and every request must check it quickly.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def encode(info: TokenInfo) -> dict[str, str]:
    """The hash fields of a token record (absent values stored as "")."""
    return {
        "owner": info.owner, "kind": info.kind, "label": info.label,
        "created_at": str(info.created_at), "expires_at": _opt(info.expires_at),
        "last_used": _opt(info.last_used), "job_id": info.job_id or "",
        "permissioned_as": info.permissioned_as or "", "created_by": info.created_by or "",
    }


def decode(sha: str, raw: Mapping[bytes, bytes]) -> TokenInfo | None:
    """A token record read back, or None when it is missing or incomplete."""
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    if fields.get("kind") not in ("api", "job") or not fields.get("owner") or not fields.get("created_at"):
        return None
    kind: TokenKind = "api" if fields["kind"] == "api" else "job"
    return TokenInfo(
        token_id=sha[:ID_LENGTH], owner=fields["owner"], kind=kind, label=fields.get("label", ""),
        created_at=int(fields["created_at"]), expires_at=_int(fields.get("expires_at")),
        last_used=_int(fields.get("last_used")), job_id=fields.get("job_id") or None,
        permissioned_as=fields.get("permissioned_as") or None,
        created_by=fields.get("created_by") or None,
    )


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def _int(text: str | None) -> int | None:
    return int(text) if text else None


class TokenStore:
    """Creates, lists, revokes and looks up tokens (the base of ``IdentityStore``)."""

    def __init__(self, client: redis.Redis, keys: Keys, *, clock: Clock = now_ms) -> None:
        self.client = client
        self.keys = keys
        self.clock = clock
        self._job_key: bytes | None = None

    @redis_errors
    def job_token_key(self) -> bytes:
        """The instance's key of signed job tokens, made by the first process that needs it."""
        if self._job_key is None:
            self.client.set(self.keys.job_token_key, jobtokens.new_key(), nx=True)
            key = self.client.get(self.keys.job_token_key)
            if key is None or len(key) != jobtokens.KEY_BYTES:
                raise AuthError("the job token key in Redis is missing or malformed")
            self._job_key = bytes(key)
        return self._job_key

    @redis_errors
    def create_token(
        self, owner: str, *, label: str = "", expires_at: int | None = None
    ) -> tuple[str, TokenInfo]:
        """A new API token for an existing user: (plain text, shown once; its info)."""
        if len(label) > MAX_LABEL_LENGTH or not label.isprintable():
            raise SpecError(f"token label: at most {MAX_LABEL_LENGTH} printable characters")
        now = self.clock()
        if expires_at is not None and expires_at <= now:
            raise SpecError("token expiry is in the past; give a later time")
        token = new_secret()
        sha = digest(token)
        info = TokenInfo(sha[:ID_LENGTH], owner, "api", label, now, expires_at, None, None, None)

        def write(pipe: Any) -> None:
            if not pipe.exists(self.keys.user(owner)):
                raise NotFound(f"no user {owner!r}; create it first (gristmill user create)")
            pipe.multi()
            pipe.hset(self.keys.token(sha), mapping=encode(info))
            if expires_at is not None:
                pipe.pexpireat(self.keys.token(sha), expires_at)
            pipe.sadd(self.keys.user_tokens(owner), sha)

        self.client.transaction(write, self.keys.user(owner))
        return token, info

    @redis_errors
    def list_tokens(self, owner: str) -> list[TokenInfo]:
        """The user's API tokens, oldest first (NotFound for no such user); forgets expired ones."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.user(owner))
            pipe.smembers(self.keys.user_tokens(owner))
            exists, members = pipe.execute()
        if not exists:
            raise NotFound(f"no user {owner!r} (see gristmill user list)")
        shas = sorted(s.decode() for s in members)
        with self.client.pipeline(transaction=False) as pipe:
            for sha in shas:
                pipe.hgetall(self.keys.token(sha))
            records = pipe.execute()
        infos = {sha: decode(sha, raw) for sha, raw in zip(shas, records, strict=True)}
        gone = [sha for sha, info in infos.items() if info is None]
        if gone:
            self.client.srem(self.keys.user_tokens(owner), *gone)
        return sorted((i for i in infos.values() if i is not None), key=lambda i: i.created_at)

    @redis_errors
    def revoke_token(self, owner: str, token_id: str) -> None:
        """Revoke one of ``owner``'s API tokens by its token_id; NotFound otherwise."""
        shas = [s.decode() for s in self.client.smembers(self.keys.user_tokens(owner))]
        matches = [sha for sha in shas if len(token_id) == ID_LENGTH and sha[:ID_LENGTH] == token_id]
        if len(matches) != 1:
            raise NotFound(f"{owner!r} has no token {token_id!r} (see gristmill token list --user)")
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.token(matches[0]))
            pipe.srem(self.keys.user_tokens(owner), matches[0])
            pipe.execute()

    @redis_errors
    def mint_job_token(self, job_id: str, permissioned_as: str, *, expires_at: int,
                       created_by: str | None = None, claim: str | None = None) -> str:
        """A job's ``WM_TOKEN``, acting as ``permissioned_as`` until ``expires_at``, with no
        more than the role of ``created_by``.

        With ``claim`` (the worker's case): a signed token (``auth/jobtokens.py``), live
        while the job runs under that claim; nothing is written. Without: a stored token,
        live until revoked, which replaces the job's previous stored token.
        """
        check_identity(permissioned_as)
        if not job_id:
            raise SpecError("a job token needs a job id")
        now = self.clock()
        if expires_at <= now:
            raise SpecError("a job token's expiry must be in the future")
        if claim is not None:
            return jobtokens.sign(self.job_token_key(), jobtokens.JobClaims(
                job_id=job_id, claim=claim, permissioned_as=permissioned_as,
                created_by=created_by, created_at=now, expires_at=expires_at))
        token = new_secret()
        sha = digest(token)
        info = TokenInfo(sha[:ID_LENGTH], permissioned_as, "job", "", now, expires_at,
                         None, job_id, permissioned_as, created_by)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.token(sha), mapping=encode(info))
            pipe.pexpireat(self.keys.token(sha), expires_at)
            pipe.set(self.keys.job_token(job_id), sha, pxat=expires_at, get=True)
            previous = pipe.execute()[-1]
        if previous is not None and previous.decode() != sha:
            self.client.delete(self.keys.token(previous.decode()))
        return token

    @redis_errors
    def revoke_job_token(self, job_id: str) -> None:
        """Revoke a job's ``WM_TOKEN``, if it has one (idempotent)."""
        sha = self.client.getdel(self.keys.job_token(job_id))
        if sha is not None:
            self.client.delete(self.keys.token(sha.decode()))

    @redis_errors
    def lookup_token(self, token: str) -> TokenInfo:
        """The live token ``token`` names; AuthError when unknown, revoked or expired.

        A signed job token is checked here for its signature and expiry only: whether its
        attempt still runs is ``common/authn.require_live``'s question, as for every job token.
        """
        if isinstance(token, str) and jobtokens.is_signed(token):
            return self._signed_job_token(token)
        if not isinstance(token, str) or not token.startswith(PREFIX) or len(token) > MAX_TOKEN_LENGTH:
            raise AuthError(UNKNOWN)
        sha = digest(token)
        info = decode(sha, self.client.hgetall(self.keys.token(sha)))
        if info is None:
            raise AuthError(UNKNOWN)
        if info.expires_at is not None and info.expires_at <= self.clock():
            raise AuthError(EXPIRED)
        return info

    def _signed_job_token(self, token: str) -> TokenInfo:
        claims = jobtokens.verify(self.job_token_key(), token)
        if claims is None:
            raise AuthError(UNKNOWN)
        if claims.expires_at <= self.clock():
            raise AuthError(EXPIRED)
        return TokenInfo(
            token_id=digest(token)[:ID_LENGTH], owner=claims.permissioned_as, kind="job",
            label="", created_at=claims.created_at, expires_at=claims.expires_at,
            last_used=None, job_id=claims.job_id, permissioned_as=claims.permissioned_as,
            created_by=claims.created_by, claim=claims.claim)

    @redis_errors
    def touch_token(self, token: str, info: TokenInfo) -> None:
        """Record a use of an API token, at most once a minute, never reviving a revoked one."""
        now = self.clock()
        if info.last_used is not None and now - info.last_used < LAST_USED_EVERY_MS:
            return
        key = self.keys.token(digest(token))

        def write(pipe: Any) -> None:
            if pipe.exists(key):
                pipe.multi()
                pipe.hset(key, "last_used", str(now))

        self.client.transaction(write, key)
