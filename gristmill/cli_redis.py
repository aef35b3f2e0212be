"""`gristmill redis-user`: Redis ACL users for producers that may only enqueue.

A producer user can ``LPUSH`` to the inbox and nothing else: no reads, no
other key, no admin command. Give one to a third-party service instead of the
operator's credentials. On the embedded server of `gristmill up` the users
are saved to its ACL file and survive restarts.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import Any
from urllib.parse import urlparse

import redis

from common.connection import redis_errors
from common.errors import ConfigError, SpecError
from common.paths import check_name

PRODUCER_COMMANDS = ("lpush", "ping")


def producer_rules(inbox_key: str, password: str) -> list[str]:
    """The ACL rules of a producer: its password, the inbox key, LPUSH (and PING) only."""
    return ["reset", "on", f">{password}", "resetchannels", f"~{inbox_key}", "-@all",
            *(f"+{command}" for command in PRODUCER_COMMANDS)]


def producer_url(operator_url: str, name: str, password: str) -> str:
    """The operator's URL with the producer's credentials instead."""
    parts = urlparse(operator_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{name}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def add_redis_user_commands(sub: Any) -> None:
    p = sub.add_parser("redis-user", help="Redis users for producers that may only enqueue")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="a user that may only LPUSH to the inbox; "
                                "prints its URL (the password is shown once)")
    create.add_argument("name")
    create.set_defaults(func=cmd_create)
    delete = actions.add_parser("delete", help="remove a producer user")
    delete.add_argument("name")
    delete.set_defaults(func=cmd_delete)
    listing = actions.add_parser("list", help="the server's ACL users")
    listing.set_defaults(func=cmd_list)


def _client() -> Any:
    from gristmill.client import Gristmill

    return Gristmill()


@redis_errors
def _save(client: redis.Redis) -> str:
    """Persist the ACL when the server has an ACL file; a note for the user."""
    if not client.config_get("aclfile").get("aclfile"):
        return ("note: this server has no ACL file: the user lasts until it restarts "
                "(add it to your server's configuration)")
    client.acl_save()
    return "saved to the server's ACL file"


def cmd_create(ns: argparse.Namespace) -> int:
    check_name(ns.name, "Redis user name")
    if ns.name in ("default", "gristmill"):
        raise SpecError(f"{ns.name!r} is reserved; pick another name")
    gm = _client()
    password = secrets.token_urlsafe(32)
    rules = producer_rules(gm.keys.inbox, password)
    try:
        gm.redis.execute_command("ACL", "SETUSER", ns.name, *rules)
    except redis.exceptions.ResponseError as exc:
        raise ConfigError(f"the server refused the user: {exc}") from None
    note = _save(gm.redis)
    print(producer_url(gm.url, ns.name, password))
    print(f"created Redis user {ns.name}: LPUSH {gm.keys.inbox} only; {note}", file=sys.stderr)
    return 0


def cmd_delete(ns: argparse.Namespace) -> int:
    gm = _client()
    if ns.name in ("default", "gristmill"):
        raise SpecError(f"{ns.name!r} is the fleet's own; it cannot be deleted here")
    if not gm.redis.acl_deluser(ns.name):
        raise SpecError(f"no Redis user {ns.name!r}")
    print(f"deleted Redis user {ns.name}; {_save(gm.redis)}")
    return 0


def cmd_list(ns: argparse.Namespace) -> int:
    # redis-py decodes this reply itself, whatever decode_responses says.
    names = (u.decode() if isinstance(u, bytes) else str(u) for u in _client().redis.acl_users())
    for name in sorted(names):
        print(name)
    return 0
