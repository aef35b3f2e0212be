"""Users, groups, tokens, extra grants and folders, in Redis (``{auth}`` and ``{items}`` keys).

Decisions (who may do what) are :mod:`auth.permissions`'s; this module only
stores the facts they are made from and authenticates bearer tokens.
Passwords are hashed with argon2id (memory-hard); tokens live in
:mod:`auth.tokens`. Multi-key writes are WATCH/MULTI transactions, so two
operators racing never leave a half-made user or a member of a deleted group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from auth.permissions import LEVELS, ROLES, Acl, FolderAcl, Level, Principal, lesser_role
from auth.permissions import Role as RoleName
from auth.tokens import TokenInfo, TokenStore
from common.clock import Clock, now_ms
from common.connection import redis_errors
from common.errors import AuthError, GristmillError, NotFound, SpecError
from common.keys import Keys
from common.paths import check_identity, check_item_path, check_name

INBOX = "inbox"  # the built-in user of tokenless inbox specs: no groups, no rights, never stored
MAX_PASSWORD_LENGTH = 1024
MIN_PASSWORD_LENGTH = 8
BAD_LOGIN = "unknown user or wrong password"
Role = Literal["reader", "writer"]
_LEVEL: dict[str, Level] = {level: level for level in LEVELS}


@dataclass(frozen=True)
class User:
    name: str
    role: RoleName
    created_at: int
    disabled: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class AuthContext:
    """Who a bearer token acts as, and the token itself."""

    principal: Principal
    token: TokenInfo


def _text(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def _user(fields: Mapping[str, str]) -> User:
    return User(fields["name"], _role(fields), int(fields["created_at"]),
                fields.get("disabled") == "1")


def _role(fields: Mapping[str, str]) -> RoleName:
    """The stored role; users made before roles existed: admin or developer."""
    stored = fields.get("role", "")
    for role in ROLES:
        if stored == role:
            return role
    return "admin" if fields.get("is_admin") == "1" else "developer"


def _folder(fields: Mapping[str, str]) -> FolderAcl:
    return FolderAcl(readers=frozenset(json.loads(fields.get("readers", "[]"))),
                     writers=frozenset(json.loads(fields.get("writers", "[]"))))


def _no_user(name: str) -> NotFound:
    return NotFound(f"no user {name!r} (see gristmill user list)")


def _no_group(name: str) -> NotFound:
    return NotFound(f"no group {name!r} (see gristmill group list)")


@functools.cache
def _dummy_hash(hasher: PasswordHasher) -> str:
    """Verified against for unknown users, so they take as long as known ones."""
    return hasher.hash("not a password of anyone")


class IdentityStore(TokenStore):
    """Users, groups, grants and folders, on top of the tokens of :class:`TokenStore`."""

    def __init__(self, client: redis.Redis, keys: Keys, *, clock: Clock = now_ms,
                 hasher: PasswordHasher | None = None) -> None:
        super().__init__(client, keys, clock=clock)
        self.hasher = hasher or PasswordHasher()

    # -- users ------------------------------------------------------------------------------

    @redis_errors
    def create_user(self, name: str, password: str | None = None, *,
                    role: RoleName = "developer") -> User:
        """A new user with ``role``; without a password it can only use tokens."""
        if role not in ROLES:
            raise SpecError(f"role {role!r} is not one of {', '.join(ROLES)}")
        check_name(name, "user name")
        if name == INBOX:
            raise SpecError(f"{INBOX!r} is reserved for tokenless inbox specs; pick another name")
        if password is not None and not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
            raise SpecError(f"a password needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
        user = User(name, role, self.clock())
        fields = {"name": name, "password": self.hasher.hash(password) if password else "",
                  "role": role, "is_admin": "1" if user.is_admin else "0", "disabled": "0",
                  "created_at": str(user.created_at)}
        self._create(self.keys.user(name), fields, f"user {name!r}", self.keys.users, name)
        return user

    @redis_errors
    def get_user(self, name: str) -> User:
        fields = _text(self.client.hgetall(self.keys.user(name)))
        if not fields:
            raise _no_user(name)
        return _user(fields)

    @redis_errors
    def list_users(self) -> list[User]:
        """Every user, by name."""
        names = sorted(n.decode() for n in self.client.smembers(self.keys.users))
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.user(name))
            return [_user(_text(raw)) for raw in pipe.execute() if raw]

    @redis_errors
    def set_disabled(self, name: str, disabled: bool) -> None:
        """Disable (or enable again) a user: its tokens, and jobs run as it, stop authenticating."""
        def write(pipe: Any) -> None:
            if not pipe.exists(self.keys.user(name)):
                raise _no_user(name)
            pipe.multi()
            pipe.hset(self.keys.user(name), "disabled", "1" if disabled else "0")

        self.client.transaction(write, self.keys.user(name))

    @redis_errors
    def delete_user(self, name: str) -> None:
        """Delete a user, revoke all its API tokens and take it out of its groups."""
        watched = (self.keys.user(name), self.keys.memberships(name), self.keys.user_tokens(name))

        def write(pipe: Any) -> None:
            if not pipe.exists(self.keys.user(name)):
                raise _no_user(name)
            groups = [g.decode() for g in pipe.smembers(self.keys.memberships(name))]
            shas = [s.decode() for s in pipe.smembers(self.keys.user_tokens(name))]
            pipe.multi()
            for group in groups:
                pipe.srem(self.keys.members(group), name)
            for sha in shas:
                pipe.delete(self.keys.token(sha))
            pipe.delete(*watched)
            pipe.srem(self.keys.users, name)

        self.client.transaction(write, *watched)
        self.forget(f"u/{name}")

    @redis_errors
    def verify_password(self, name: str, password: str) -> User:
        """The user, when ``password`` is its password; AuthError (one message) otherwise."""
        fields = _text(self.client.hgetall(self.keys.user(name)))
        stored = fields.get("password") or _dummy_hash(self.hasher)
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            raise AuthError(BAD_LOGIN) from None
        if not fields.get("password"):
            raise AuthError(BAD_LOGIN)
        user = _user(fields)
        if user.disabled:
            raise AuthError(f"user {name!r} is disabled; ask an admin")
        if self.hasher.check_needs_rehash(stored):
            self.client.hset(self.keys.user(name), "password", self.hasher.hash(password))
        return user

    # -- groups -----------------------------------------------------------------------------

    @redis_errors
    def create_group(self, name: str, *, created_by: str = "u/admin") -> None:
        check_name(name, "group name")
        check_identity(created_by)
        fields = {"name": name, "created_at": str(self.clock()), "created_by": created_by}
        self._create(self.keys.user_group(name), fields, f"group {name!r}", self.keys.user_groups, name)

    @redis_errors
    def delete_group(self, name: str) -> None:
        """Delete a group and every membership in it."""
        watched = (self.keys.user_group(name), self.keys.members(name))

        def write(pipe: Any) -> None:
            if not pipe.exists(self.keys.user_group(name)):
                raise _no_group(name)
            members = [m.decode() for m in pipe.smembers(self.keys.members(name))]
            pipe.multi()
            for member in members:
                pipe.srem(self.keys.memberships(member), name)
            pipe.delete(*watched)
            pipe.srem(self.keys.user_groups, name)

        self.client.transaction(write, *watched)
        self.forget(f"g/{name}")

    @redis_errors
    def add_member(self, group: str, user: str) -> None:
        self._membership(group, user, add=True)

    @redis_errors
    def remove_member(self, group: str, user: str) -> None:
        self._membership(group, user, add=False)

    def _membership(self, group: str, user: str, *, add: bool) -> None:
        def write(pipe: Any) -> None:
            if not pipe.exists(self.keys.user_group(group)):
                raise _no_group(group)
            if add and not pipe.exists(self.keys.user(user)):
                raise _no_user(user)
            pipe.multi()
            change = pipe.sadd if add else pipe.srem
            change(self.keys.members(group), user)
            change(self.keys.memberships(user), group)

        self.client.transaction(write, self.keys.user_group(group), self.keys.user(user))

    @redis_errors
    def list_groups(self) -> dict[str, list[str]]:
        """Every group and its members, sorted."""
        names = sorted(g.decode() for g in self.client.smembers(self.keys.user_groups))
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.smembers(self.keys.members(name))
            members = pipe.execute()
        return {name: sorted(m.decode() for m in ms) for name, ms in zip(names, members, strict=True)}

    @redis_errors
    def groups_of(self, user: str) -> frozenset[str]:
        return frozenset(g.decode() for g in self.client.smembers(self.keys.memberships(user)))

    # -- principals and authentication ------------------------------------------------------

    def principal_for(self, identity: str) -> Principal:
        """Who ``u/<user>`` or ``g/<group>`` is; NotFound when it does not exist."""
        return self._principal(identity)[0]

    @redis_errors
    def _principal(self, identity: str) -> tuple[Principal, int, bool]:
        """(principal, when the identity was created, whether it is disabled)."""
        kind, _, name = check_identity(identity).partition("/")
        if kind == "g":
            created = self.client.hget(self.keys.user_group(name), "created_at")
            if created is None:
                raise _no_group(name)
            return Principal(user=None, groups=frozenset({name})), int(created), False
        if name == INBOX:
            return Principal(user=INBOX), 0, False
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.user(name))
            pipe.smembers(self.keys.memberships(name))
            raw, groups = pipe.execute()
        if not raw:
            raise _no_user(name)
        user = _user(_text(raw))
        principal = Principal(name, frozenset(g.decode() for g in groups), user.role)
        return principal, user.created_at, user.disabled

    def authenticate(self, token: str) -> AuthContext:
        """Who a bearer token acts as; AuthError when it is not live or its identity is gone."""
        info = self.lookup_token(token)
        identity = f"u/{info.owner}" if info.kind == "api" else info.permissioned_as or ""
        try:
            principal, created_at, disabled = self._principal(identity)
        except (NotFound, SpecError):
            raise AuthError(f"this token's identity {identity!r} no longer exists") from None
        if disabled:
            raise AuthError(f"{identity} is disabled; ask an admin")
        if created_at > info.created_at:  # deleted and made again: not the same identity
            raise AuthError(f"this token's identity {identity!r} no longer exists")
        if info.kind == "api":
            self.touch_token(token, info)
        elif info.created_by is not None and info.created_by != identity:
            principal = dataclasses.replace(
                principal, role=lesser_role(principal.role, self._creator_role(info.created_by)))
        return AuthContext(principal, info)

    def _creator_role(self, created_by: str) -> RoleName:
        """The role of the user who asked for a job; the least one if he is gone."""
        try:
            return self._principal(created_by)[0].role
        except (NotFound, SpecError):
            return "operator"

    # -- extra grants and folders -----------------------------------------------------------

    @redis_errors
    def get_acl(self, path: str) -> Acl:
        return _acl(_text(self.client.hgetall(self.keys.acl(check_item_path(path)))))

    @redis_errors
    def set_grant(self, path: str, identity: str, level: Level | None) -> None:
        """Grant ``identity`` a level on ``path`` (None removes it); the identity must exist."""
        check_item_path(path)
        pipe = self.client.pipeline(transaction=True)
        if level is None:
            pipe.hdel(self.keys.acl(path), check_identity(identity))
            pipe.srem(self.keys.granted(identity), f"p:{path}")
        else:
            if level not in LEVELS:
                raise SpecError(f"bad level {level!r}: use one of {', '.join(LEVELS)}")
            self._grantee(identity)
            pipe.hset(self.keys.acl(path), identity, level)
            pipe.sadd(self.keys.granted(identity), f"p:{path}")
        pipe.execute()

    def forget(self, identity: str) -> None:
        """Remove every grant and folder role naming a deleted identity, so that a new
        user or group of the same name inherits nothing."""
        for entry in self.client.smembers(self.keys.granted(identity)):
            kind, _, target = entry.decode().partition(":")
            if kind == "p":
                self.client.hdel(self.keys.acl(target), identity)
            elif kind == "f":
                with contextlib.suppress(NotFound):
                    self.set_folder_member(target, identity, None)
        self.client.delete(self.keys.granted(identity))

    def _grantee(self, identity: str) -> None:
        if check_identity(identity) == f"u/{INBOX}":
            raise SpecError("u/inbox is given no rights: tokenless specs must read nothing")
        self._principal(identity)

    @redis_errors
    def create_folder(self, name: str, *, owner: str) -> None:
        """A new folder; ``owner`` (an identity) is its first writer."""
        check_name(name, "folder name")
        self._grantee(owner)
        fields = {"owner": owner, "readers": "[]", "writers": json.dumps([owner]),
                  "created_at": str(self.clock())}
        self._create(self.keys.folder(name), fields, f"folder {name!r}")
        self.client.sadd(self.keys.granted(owner), f"f:{name}")

    @redis_errors
    def get_folder(self, name: str) -> FolderAcl | None:
        fields = _text(self.client.hgetall(self.keys.folder(check_name(name, "folder name"))))
        return _folder(fields) if fields else None

    @redis_errors
    def set_folder_member(self, name: str, identity: str, role: Role | None) -> None:
        """Make ``identity`` a reader or a writer of the folder, or (None) neither."""
        if role not in ("reader", "writer", None):
            raise SpecError(f"bad folder role {role!r}: use reader or writer")
        if role is None:
            check_identity(identity)
        else:
            self._grantee(identity)
        key = self.keys.folder(check_name(name, "folder name"))

        def write(pipe: Any) -> None:
            fields = _text(pipe.hgetall(key))
            if not fields:
                raise NotFound(f"no folder {name!r}")
            folder = _folder(fields)
            readers = folder.readers - {identity} | ({identity} if role == "reader" else set())
            writers = folder.writers - {identity} | ({identity} if role == "writer" else set())
            pipe.multi()
            pipe.hset(key, mapping={"readers": json.dumps(sorted(readers)),
                                    "writers": json.dumps(sorted(writers))})
            if role is None:
                pipe.srem(self.keys.granted(identity), f"f:{name}")
            else:
                pipe.sadd(self.keys.granted(identity), f"f:{name}")

        self.client.transaction(write, key)

    @redis_errors
    def access(self, path: str) -> tuple[Acl, FolderAcl | None]:
        """The extra grants of ``path`` and its folder's members, in one round trip."""
        kind, owner = check_item_path(path).split("/")[:2]
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.acl(path))
            if kind == "f":
                pipe.hgetall(self.keys.folder(owner))
            answers = pipe.execute()
        folder = _text(answers[1]) if kind == "f" else {}
        return _acl(_text(answers[0])), (_folder(folder) if folder else None)

    # -- bootstrap --------------------------------------------------------------------------

    @redis_errors
    def ensure_admin(self, name: str = "admin") -> str | None:
        """Create the admin user and its "bootstrap" token once; the token when just made."""
        if self.client.exists(self.keys.user(name)):
            return None
        try:
            self.create_user(name, role="admin")
        except GristmillError:
            if self.client.exists(self.keys.user(name)):
                return None  # another process bootstrapped at the same moment
            raise
        return self.create_token(name, label="bootstrap")[0]

    def _create(self, key: str, fields: Mapping[str, str], what: str, index: str | None = None,
                member: str = "") -> None:
        """Write a new record (and add it to its index); GristmillError when it exists."""
        def write(pipe: Any) -> None:
            if pipe.exists(key):
                raise GristmillError(f"{what} already exists")
            pipe.multi()
            pipe.hset(key, mapping=fields)
            if index is not None:
                pipe.sadd(index, member)

        self.client.transaction(write, key)


def _acl(fields: Mapping[str, str]) -> Acl:
    return Acl({identity: _LEVEL[level] for identity, level in fields.items() if level in _LEVEL})
