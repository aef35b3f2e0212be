"""`gristmill user|group|token ...`: operator commands over Redis (they act as the admin)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from auth.identity import IdentityStore
from auth.tokens import TokenInfo
from common.clock import now_ms
from common.errors import GristmillError
from gristmill.durations import parse_duration_ms


def _store() -> IdentityStore:
    from gristmill.client import Gristmill

    client = Gristmill()
    return IdentityStore(client.redis, client.keys)


def _when(ms: int | None, never: str = "-") -> str:
    if ms is None:
        return never
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_user_create(ns: argparse.Namespace) -> int:
    password = None
    if ns.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise GristmillError("--password-stdin: no password on the first line of stdin")
    user = _store().create_user(ns.name, password, role="admin" if ns.admin else ns.role)
    print(f"created {user.role} {user.name}" + ("" if password else " (token-only: no password)"))
    return 0


def cmd_user_list(ns: argparse.Namespace) -> int:
    store = _store()
    groups_of: dict[str, list[str]] = {}
    for group, members in store.list_groups().items():
        for member in members:
            groups_of.setdefault(member, []).append(group)
    for user in store.list_users():
        groups = ",".join(groups_of.get(user.name, [])) or "-"
        flags = user.role + (" disabled" if user.disabled else "")
        print(f"{user.name:<24} {flags:<19} groups={groups}  created {_when(user.created_at)}")
    return 0


def cmd_user_delete(ns: argparse.Namespace) -> int:
    _store().delete_user(ns.name)
    print(f"deleted user {ns.name} (its API tokens are revoked)")
    return 0


def cmd_group_create(ns: argparse.Namespace) -> int:
    _store().create_group(ns.name)
    print(f"created group {ns.name}")
    return 0


def cmd_group_add(ns: argparse.Namespace) -> int:
    _store().add_member(ns.group, ns.user)
    print(f"{ns.user} is now a member of {ns.group}")
    return 0


def cmd_group_remove(ns: argparse.Namespace) -> int:
    _store().remove_member(ns.group, ns.user)
    print(f"{ns.user} is no longer a member of {ns.group}")
    return 0


def cmd_group_list(ns: argparse.Namespace) -> int:
    for group, members in _store().list_groups().items():
        print(f"{group:<24} {' '.join(members) or '(no members)'}")
    return 0


def cmd_token_create(ns: argparse.Namespace) -> int:
    expires_at = now_ms() + parse_duration_ms(ns.expires_in) if ns.expires_in else None
    token, info = _store().create_token(ns.user, label=ns.label, expires_at=expires_at)
    print(token)
    print(f"token {info.token_id} for {info.owner}, expires {_when(expires_at, 'never')}. "
          "Copy it now: it is not shown again.", file=sys.stderr)
    return 0


def _token_line(info: TokenInfo) -> str:
    return (f"{info.token_id}  {info.label or '-':<20} created {_when(info.created_at)}  "
            f"expires {_when(info.expires_at, 'never')}  last used {_when(info.last_used, 'never')}")


def cmd_token_list(ns: argparse.Namespace) -> int:
    for info in _store().list_tokens(ns.user):
        print(_token_line(info))
    return 0


def cmd_token_revoke(ns: argparse.Namespace) -> int:
    _store().revoke_token(ns.user, ns.token_id)
    print(f"revoked token {ns.token_id} of {ns.user}")
    return 0


def add_identity_commands(sub: Any) -> None:
    """Add ``user``, ``group`` and ``token`` to the CLI's subparsers."""
    user = sub.add_parser("user", help="users").add_subparsers(dest="action", required=True)
    p = user.add_parser("create", help="create a user (token-only without --password-stdin)")
    p.add_argument("name")
    p.add_argument("--role", choices=["admin", "developer", "operator"], default="developer",
                   help="admin: everything, as anyone; developer (default): deploys scripts, "
                   "runs raw code; operator: runs deployed scripts only")
    p.add_argument("--admin", action="store_true", help="the same as --role admin")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of stdin")
    p.set_defaults(func=cmd_user_create)
    user.add_parser("list").set_defaults(func=cmd_user_list)
    p = user.add_parser("delete", help="delete a user and revoke its tokens")
    p.add_argument("name")
    p.set_defaults(func=cmd_user_delete)

    group = sub.add_parser("group", help="groups of users").add_subparsers(dest="action", required=True)
    p = group.add_parser("create")
    p.add_argument("name")
    p.set_defaults(func=cmd_group_create)
    for action, func in (("add", cmd_group_add), ("remove", cmd_group_remove)):
        p = group.add_parser(action, help=f"{action} a member")
        p.add_argument("group")
        p.add_argument("user")
        p.set_defaults(func=func)
    group.add_parser("list").set_defaults(func=cmd_group_list)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    p = token.add_parser("create", help="print a new API token (shown once)")
    p.add_argument("--user", required=True)
    p.add_argument("--label", default="")
    p.add_argument("--expires-in", metavar="DURATION", help="e.g. 30d, 12h (default: never)")
    p.set_defaults(func=cmd_token_create)
    p = token.add_parser("list", help="a user's API tokens (never the secrets)")
    p.add_argument("--user", required=True)
    p.set_defaults(func=cmd_token_list)
    p = token.add_parser("revoke", help="revoke a token by its id (from token list)")
    p.add_argument("--user", required=True)
    p.add_argument("token_id")
    p.set_defaults(func=cmd_token_revoke)
