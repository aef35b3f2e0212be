"""Who may do what: pure decisions from data, no I/O.

Identities are ``u/<user>`` and ``g/<group>``. Items live at paths
``u/<user>/...`` (owned by that user), ``g/<group>/...`` (owned by the
group's members) or ``f/<folder>/...`` (governed by the folder's readers and
writers). Any item may grant extra levels to identities. Levels are ordered:
``read`` < ``run`` < ``write``; a level grants every lower one. Folder readers
get ``run`` (they may read and run what the folder holds, as in Windmill),
folder writers ``write``. Admins may do everything.

Users have a role: ``admin`` (everything), ``developer`` (deploys scripts and
runs raw code: previews) or ``operator`` (runs what it may run, sees its jobs;
never raw code, never a deploy). A job acts with the role of its
``permissioned_as``, capped by the role of the user who asked for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from common.errors import PermissionDenied, SpecError
from common.paths import check_identity, check_item_path

Level = Literal["read", "run", "write"]
Role = Literal["admin", "developer", "operator"]
ROLES: tuple[Role, ...] = ("operator", "developer", "admin")  # fewest rights first
LEVELS: tuple[Level, ...] = ("read", "run", "write")
_RANK = {level: rank for rank, level in enumerate(LEVELS)}
INBOX = "inbox"  # the built-in identity of tokenless inbox specs: no rights at all


@dataclass(frozen=True)
class Principal:
    """Whoever acts: a user (with the groups it belongs to), or a group (a job run as it)."""

    user: str | None
    groups: frozenset[str] = frozenset()
    role: Role = "developer"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def name(self) -> str:
        """``u/<user>``, or ``g/<group>`` for a group identity."""
        if self.user is not None:
            return f"u/{self.user}"
        return f"g/{next(iter(sorted(self.groups)))}" if self.groups else "g/"

    @property
    def identities(self) -> frozenset[str]:
        """Every identity whose grants apply: the user's own and its groups'."""
        own = {f"u/{self.user}"} if self.user is not None else set()
        return frozenset(own | {f"g/{group}" for group in self.groups})


@dataclass(frozen=True)
class Acl:
    """Extra levels an item grants: identity -> level."""

    extra: Mapping[str, Level] = field(default_factory=dict)


@dataclass(frozen=True)
class FolderAcl:
    """A folder's readers and writers (identities); writers also read and run."""

    readers: frozenset[str] = frozenset()
    writers: frozenset[str] = frozenset()


def level_of(
    principal: Principal, path: str, acl: Acl | None = None, folder: FolderAcl | None = None
) -> Level | None:
    """The highest level ``principal`` has on the item at ``path`` (None: nothing)."""
    check_item_path(path)
    if principal.is_admin:
        return "write"
    if principal.user == INBOX:
        return None  # tokenless inbox jobs may read nothing, not even u/inbox/...
    kind, owner = path.split("/")[:2]
    if (kind == "u" and owner == principal.user) or (kind == "g" and owner in principal.groups):
        return "write"
    ranks: list[int] = []
    if kind == "f" and folder is not None:
        if principal.identities & folder.writers:
            ranks.append(_RANK["write"])
        elif principal.identities & folder.readers:
            ranks.append(_RANK["run"])
    if acl is not None:
        ranks.extend(_RANK[level] for ident, level in acl.extra.items()
                     if ident in principal.identities)
    return LEVELS[max(ranks)] if ranks else None


def can(
    principal: Principal, action: Level, path: str, acl: Acl | None = None,
    folder: FolderAcl | None = None,
) -> bool:
    """Whether ``principal`` may ``action`` (read, run, write) the item at ``path``."""
    level = level_of(principal, path, acl, folder)
    return level is not None and _RANK[level] >= _RANK[action]


def require(
    principal: Principal, action: Level, path: str, acl: Acl | None = None,
    folder: FolderAcl | None = None,
) -> None:
    """Raise PermissionDenied unless :func:`can`."""
    if not can(principal, action, path, acl, folder):
        raise PermissionDenied(f"{principal.name} may not {action} {path}")


def may_run_as(principal: Principal, permissioned_as: str) -> bool:
    """A user runs jobs as himself or a group he belongs to; admins as anyone; never higher."""
    try:
        check_identity(permissioned_as)
    except SpecError:
        return False
    if principal.is_admin:
        return True
    kind, _, name = permissioned_as.partition("/")
    if kind == "u":
        return name == principal.user
    if kind == "g":
        return name in principal.groups
    return False


def lesser_role(a: Role, b: Role) -> Role:
    """The role with fewer rights of the two."""
    return a if ROLES.index(a) <= ROLES.index(b) else b


def require_author(principal: Principal, what: str) -> None:
    """PermissionDenied unless ``principal`` may write code: run raw code or deploy (``what``)."""
    if principal.role == "operator":
        raise PermissionDenied(
            f"{principal.name} has the operator role, which may not {what}; "
            "it runs deployed scripts only (an admin can give it the developer role)"
        )
