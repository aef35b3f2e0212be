"""Flow versions: immutable, addressed by hash, a path pointing at the latest (like scripts)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

from common.clock import Clock, now_ms
from common.connection import redis_errors
from common.errors import GristmillError, NotFound
from common.keys import Keys
from common.luascripts import LuaScript
from common.paths import check_item_path
from flows.model import OpenFlow, dump_flow, parse_flow
from jobs.scripts import HASH_LENGTH, is_hash

DEPLOY_FLOW = LuaScript("deploy_flow",
                        resources.files("flows").joinpath("lua", "deploy_flow.lua").read_text())


def flow_hash(path: str, canonical: str) -> str:
    """The hash of one version: its path (so a hash names one owner) and its canonical JSON."""
    return hashlib.sha256(f"{path}\0{canonical}".encode()).hexdigest()[:HASH_LENGTH]


@dataclass(frozen=True)
class FlowVersion:
    hash: str
    path: str
    flow: OpenFlow
    created_at: int
    created_by: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FlowVersions:
    """Deploys and reads flow versions under the ``{flows}`` tag."""

    def __init__(self, client: redis.Redis, keys: Keys, *, clock: Clock = now_ms) -> None:
        self.client = client
        self.keys = keys
        self.clock = clock

    @redis_errors
    def deploy(self, path: str, document: dict[str, Any] | str | bytes, *,
               created_by: str = "u/admin") -> tuple[FlowVersion, bool]:
        """Check and save a flow (JSON or YAML); the version and whether it is new.

        FlowDefinitionError (a SpecError) lists everything that is refused.
        """
        check_item_path(path)
        canonical = dump_flow(parse_flow(document))
        digest = flow_hash(path, canonical)
        try:
            keys = [self.keys.flow_version(digest), self.keys.flow_paths, self.keys.flow_history(path)]
            created = DEPLOY_FLOW(self.client, keys, [digest, path, canonical, self.clock(), created_by])
        except redis.exceptions.ResponseError as exc:
            raise GristmillError(str(exc)) from exc
        return self.by_hash(digest), bool(created)

    @redis_errors
    def by_hash(self, digest: str) -> FlowVersion:
        fields = {_text(k): _text(v) for k, v in self.client.hgetall(self.keys.flow_version(digest)).items()}
        if not fields:
            raise NotFound(f"no flow version with hash {digest}")
        return FlowVersion(fields["hash"], fields["path"], parse_flow(fields["value"]),
                           int(fields["created_at"]), fields["created_by"])

    @redis_errors
    def latest(self, path: str) -> FlowVersion:
        digest = self.client.hget(self.keys.flow_paths, path)
        if digest is None:
            raise NotFound(f"no flow at path {path!r}; deploy one with `gristmill flow deploy`")
        return self.by_hash(_text(digest))

    def get(self, ref: str) -> FlowVersion:
        """A version by hash, or the latest at a path."""
        return self.by_hash(ref) if is_hash(ref) else self.latest(ref)

    @redis_errors
    def history(self, path: str) -> list[str]:
        return [_text(h) for h in self.client.lrange(self.keys.flow_history(path), 0, -1)]

    @redis_errors
    def all_paths(self) -> dict[str, str]:
        raw = self.client.hgetall(self.keys.flow_paths)
        return {_text(k): _text(v) for k, v in sorted(raw.items())}
