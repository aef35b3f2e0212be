"""Variables, secrets and resources at item paths, with who may read and write them.

Permission decisions come from :mod:`auth.permissions`; the item's ACL and
its folder's readers/writers come from an ``access`` callable given at
construction (the API passes ``IdentityStore.access``), so this module never
reads identity data itself.

A secret's value is stored only sealed (:class:`vault.crypto.SecretBox`,
context = its path); metadata and list views never carry it, sealed or not.
A job that reads a secret records it in its group's redact set, from which
the worker recovers the plaintexts (:func:`vault.redaction.redaction_values`)
to :func:`vault.redaction.redact` its log lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from auth.permissions import Acl, FolderAcl, Level, Principal, can, require
from common.clock import Clock, now_ms
from common.connection import redis_errors
from common.errors import ConfigError, NotFound, SpecError
from common.keys import Keys
from common.paths import check_item_path, check_name
from vault.crypto import SecretBox

Access = Callable[[str], tuple[Acl, FolderAcl | None]]

MAX_VALUE_BYTES = 64 * 1024
MAX_DESCRIPTION = 1000
REDACT_TTL_S = 86_400


@dataclass(frozen=True)
class VariableInfo:
    """A variable as shown to a reader; ``value`` is None for a secret."""

    path: str
    is_secret: bool
    value: str | None
    description: str
    created_at: int
    updated_at: int
    updated_by: str


@dataclass(frozen=True)
class ResourceInfo:
    """A typed JSON object at a path (a database connection, an API account, ...)."""

    path: str
    resource_type: str
    value: dict[str, Any]
    description: str
    created_at: int
    updated_at: int
    updated_by: str


def _text(fields: dict[bytes, bytes], name: str, default: str = "") -> str:
    raw = fields.get(name.encode())
    return default if raw is None else raw.decode()


def _variable_info(path: str, fields: dict[bytes, bytes]) -> VariableInfo:
    is_secret = _text(fields, "is_secret") == "1"
    return VariableInfo(
        path=path, is_secret=is_secret, value=None if is_secret else _text(fields, "value"),
        description=_text(fields, "description"), created_at=int(_text(fields, "created_at", "0")),
        updated_at=int(_text(fields, "updated_at", "0")), updated_by=_text(fields, "updated_by"),
    )


def _resource_info(path: str, fields: dict[bytes, bytes]) -> ResourceInfo:
    return ResourceInfo(
        path=path, resource_type=_text(fields, "resource_type"),
        value=json.loads(_text(fields, "value", "{}")), description=_text(fields, "description"),
        created_at=int(_text(fields, "created_at", "0")),
        updated_at=int(_text(fields, "updated_at", "0")), updated_by=_text(fields, "updated_by"),
    )


def _check_size(text: str, what: str) -> None:
    try:
        size = len(text.encode())
    except UnicodeEncodeError as exc:
        raise SpecError(f"{what} is not valid text (it holds a lone surrogate)") from exc
    if size > MAX_VALUE_BYTES:
        raise SpecError(f"{what} is {size} bytes; the limit is {MAX_VALUE_BYTES}")


def _check_description(description: str | None) -> None:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise SpecError(f"description is {len(description)} characters; the limit is {MAX_DESCRIPTION}")


class Vault:
    """Reads and writes variables and resources, checking the acting principal's rights."""

    def __init__(
        self, client: redis.Redis, keys: Keys, box: SecretBox | None, *, access: Access,
        clock: Clock = now_ms,
    ) -> None:
        self.client = client
        self.keys = keys
        self.box = box
        self.access = access
        self.clock = clock

    def _require(self, principal: Principal, action: Level, path: str) -> None:
        check_item_path(path)
        acl, folder = self.access(path)
        require(principal, action, path, acl, folder)

    def _need_box(self) -> SecretBox:
        if self.box is None:
            raise ConfigError("secrets need an encryption key: set GRISTMILL_SECRET_KEY")
        return self.box

    def _write(self, kind: str, path: str, principal: Principal,
               fields: dict[str, str], description: str | None) -> None:
        """Create or update one item hash and its index entry in one transaction."""
        key, now = self._key(kind, path), str(self.clock())
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping={**fields, "updated_at": now, "updated_by": principal.name})
        if description is not None:
            pipe.hset(key, "description", description)
        pipe.hsetnx(key, "description", "")
        pipe.hsetnx(key, "created_at", now)
        pipe.hsetnx(key, "created_by", principal.name)
        pipe.sadd(self.keys.item_index(kind), path)
        pipe.execute()

    def _fetch(self, principal: Principal, kind: str, path: str) -> dict[bytes, bytes]:
        self._require(principal, "read", path)
        fields: dict[bytes, bytes] = self.client.hgetall(self._key(kind, path))
        if not fields:
            raise NotFound(f"no {kind} at {path}")
        return fields

    def _list(self, principal: Principal, kind: str) -> list[tuple[str, dict[bytes, bytes]]]:
        members = self.client.smembers(self.keys.item_index(kind))
        paths = sorted(p for p in (m.decode() for m in members)
                       if can(principal, "read", p, *self.access(p)))
        pipe = self.client.pipeline(transaction=False)
        for path in paths:
            pipe.hgetall(self._key(kind, path))
        # An index entry whose item was deleted meanwhile comes back empty: skip it.
        return [(p, f) for p, f in zip(paths, pipe.execute(), strict=True) if f]

    def _key(self, kind: str, path: str) -> str:
        return self.keys.variable(path) if kind == "variable" else self.keys.resource(path)

    def _delete(self, principal: Principal, kind: str, path: str) -> None:
        self._require(principal, "write", path)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self._key(kind, path))
        pipe.srem(self.keys.item_index(kind), path)
        deleted, _ = pipe.execute()
        if not deleted:
            raise NotFound(f"no {kind} at {path}")

    # -- variables -------------------------------------------------------------------------

    @redis_errors
    def set_variable(
        self, principal: Principal, path: str, value: str, *, is_secret: bool | None = None,
        description: str | None = None,
    ) -> None:
        """Create or update a variable (needs write).

        ``is_secret`` and ``description`` left at None keep the stored ones
        (a new variable: plain, no description), so a client that updates a
        secret's value without repeating ``is_secret=True`` never stores it in clear.
        """
        self._require(principal, "write", path)
        if not isinstance(value, str):
            raise SpecError(f"the value of variable {path} must be a string")
        _check_size(value, f"the value of variable {path}")
        _check_description(description)
        key = self.keys.variable(path)
        if is_secret is None:
            is_secret = self.client.hget(key, "is_secret") == b"1"
        stored = self._need_box().seal(value, context=path) if is_secret else value
        fields = {"value": stored, "is_secret": "1" if is_secret else "0"}
        self._write("variable", path, principal, fields, description)

    @redis_errors
    def get_variable(self, principal: Principal, path: str, *, redact_into: str | None = None) -> str:
        """The value of a variable (needs read); a secret is decrypted.

        With ``redact_into`` (``Keys.group(g).redact(job_id)``), a secret is
        also recorded there so that the job's log lines will be redacted.
        """
        self._require(principal, "read", path)
        fields = self.client.hmget(self.keys.variable(path), ["value", "is_secret"])
        if fields[0] is None:
            raise NotFound(f"no variable at {path}")
        stored: str = fields[0].decode()
        if fields[1] != b"1":
            return stored
        plain = self._need_box().open(stored, context=path)
        if redact_into is not None:
            pipe = self.client.pipeline(transaction=True)
            pipe.sadd(redact_into, json.dumps({"p": path, "v": stored}, separators=(",", ":")))
            pipe.expire(redact_into, REDACT_TTL_S)
            pipe.execute()
        return plain

    @redis_errors
    def get_variable_meta(self, principal: Principal, path: str) -> VariableInfo:
        """A variable's metadata (needs read); no value when it is a secret."""
        return _variable_info(path, self._fetch(principal, "variable", path))

    @redis_errors
    def list_variables(self, principal: Principal) -> list[VariableInfo]:
        """The variables ``principal`` may read, by path; secrets without values."""
        return [_variable_info(p, f) for p, f in self._list(principal, "variable")]

    @redis_errors
    def delete_variable(self, principal: Principal, path: str) -> None:
        """Delete a variable (needs write)."""
        self._delete(principal, "variable", path)

    # -- resources -------------------------------------------------------------------------

    @redis_errors
    def set_resource(
        self, principal: Principal, path: str, resource_type: str, value: dict[str, Any], *,
        description: str | None = None,
    ) -> None:
        """Create or update a resource (needs write); ``value`` is a JSON object.

        Resources are stored in clear: keep passwords in secret variables.
        """
        self._require(principal, "write", path)
        check_name(resource_type, "resource type")
        if not isinstance(value, dict):
            raise SpecError(f"the value of resource {path} must be a JSON object")
        try:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"the value of resource {path} is not JSON: {exc}") from exc
        _check_size(text, f"the value of resource {path}")
        _check_description(description)
        fields = {"resource_type": resource_type, "value": text}
        self._write("resource", path, principal, fields, description)

    @redis_errors
    def get_resource(self, principal: Principal, path: str) -> ResourceInfo:
        """A resource with its value (needs read)."""
        return _resource_info(path, self._fetch(principal, "resource", path))

    @redis_errors
    def list_resources(self, principal: Principal) -> list[ResourceInfo]:
        """The resources ``principal`` may read, by path."""
        return [_resource_info(p, f) for p, f in self._list(principal, "resource")]

    @redis_errors
    def delete_resource(self, principal: Principal, path: str) -> None:
        """Delete a resource (needs write)."""
        self._delete(principal, "resource", path)
