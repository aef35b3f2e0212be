"""The syntax of names, identities and item paths: ``u/<user>``, ``g/<group>``, ``f/<folder>/...``.

Pure checks that answer the value or raise SpecError saying what is wrong. Who
may do what at a path is :mod:`auth.permissions`'s to decide.
"""

from __future__ import annotations

import re

from common.errors import SpecError

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_PATH_LENGTH = 255
MAX_PATH_DEPTH = 16


def check_name(name: str, what: str = "name") -> str:
    """User, group and folder names: lowercase letters, digits, _ and -."""
    if not _NAME.fullmatch(name):
        raise SpecError(f"bad {what} {name!r}: use lowercase letters, digits, _ and - (max 64)")
    return name


def check_identity(identity: str) -> str:
    """``u/<user>`` or ``g/<group>``."""
    kind, _, name = identity.partition("/")
    if kind not in ("u", "g") or not _NAME.fullmatch(name):
        raise SpecError(f"bad identity {identity!r}: use u/<user> or g/<group>")
    return identity


def check_item_path(path: str) -> str:
    """``u/<user>/<name>``, ``g/<group>/<name>`` or ``f/<folder>/<name>``: no traversal."""
    parts = path.split("/")
    if (
        not 3 <= len(parts) <= MAX_PATH_DEPTH
        or len(path) > MAX_PATH_LENGTH
        or parts[0] not in ("u", "g", "f")
        or not _NAME.fullmatch(parts[1])
        or not all(_SEGMENT.fullmatch(part) for part in parts[2:])
    ):
        raise SpecError(
            f"bad path {path!r}: use u/<user>/<name>, g/<group>/<name> or f/<folder>/<name> "
            "(letters, digits, _ - ., no '..')"
        )
    return path
