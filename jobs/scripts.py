"""The script store: immutable versions addressed by hash, a path pointing at the latest."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import redis

from common import luascripts
from common.clock import Clock, now_ms
from common.connection import redis_errors
from common.errors import GristmillError, NotFound, SpecError
from common.keys import Keys
from common.languages import LANGUAGES
from common.models import ScriptVersion
from common.paths import check_item_path
from common.retry import parse_policy
from jobs.spec import MAX_TIMEOUT_S

HASH_LENGTH = 16
LIMIT_NAMES = ("memory_mb", "max_procs", "file_mb", "open_files", "disk_mb")
_HASH = re.compile(rf"^[0-9a-f]{{{HASH_LENGTH}}}$")


def script_hash(path: str, language: str, code: str, defaults: dict[str, str] | None = None) -> str:
    """The hash of one version: its path, language, content and job defaults.

    The path is part of the hash so that a hash names exactly one script
    (and so one owner) even when two paths hold the same code; the defaults
    are, so that a version never changes behaviour once deployed.
    """
    text = f"{path}\0{language}\0{code}"
    if defaults:
        text += "\0" + json.dumps(defaults, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def check_limits(limits: dict[str, Any]) -> dict[str, int]:
    """Script limits, checked: known names, whole numbers from 1 to 2^31; SpecError otherwise."""
    unknown = sorted(set(limits) - set(LIMIT_NAMES))
    if unknown:
        raise SpecError(f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(LIMIT_NAMES)}")
    for name, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
            raise SpecError(f"limit {name} must be a whole number from 1 to 2147483647")
    return dict(limits)


def is_hash(ref: str) -> bool:
    return bool(_HASH.match(ref))


class ScriptStore:
    """Reads and writes script versions."""

    def __init__(self, client: redis.Redis, keys: Keys, *, clock: Clock = now_ms) -> None:
        self.client = client
        self.keys = keys
        self.clock = clock

    @redis_errors
    def deploy(
        self, path: str, language: str, code: str, *, created_by: str = "u/admin",
        timeout_s: int | None = None, retry: dict[str, Any] | None = None, tag: str | None = None,
        limits: dict[str, int] | None = None,
    ) -> tuple[ScriptVersion, bool]:
        """Save a version (idempotent); return it and whether it is new.

        ``limits`` are sandbox limits for its jobs (``memory_mb``, ``max_procs``,
        ``file_mb``, ``open_files``, ``disk_mb``); a worker applies the lower of
        them and its own.
        """
        check_item_path(path)
        if language not in LANGUAGES:
            raise SpecError(f"unknown language {language!r}; supported: {', '.join(LANGUAGES)}")
        if timeout_s is not None and not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise SpecError(f"timeout_s must be 1 to {MAX_TIMEOUT_S} seconds (30 days)")
        if retry is not None:
            parse_policy(retry)
        defaults = {k: str(v) for k, v in (("timeout_s", timeout_s), ("tag", tag)) if v is not None}
        if retry is not None:
            defaults["retry"] = json.dumps(retry, sort_keys=True)
        if limits:
            defaults["limits"] = json.dumps(check_limits(limits), sort_keys=True)
        digest = script_hash(path, language, code, defaults)
        now = self.clock()
        try:
            created = luascripts.DEPLOY_SCRIPT(
                self.client,
                [self.keys.script(digest), self.keys.script_paths, self.keys.script_history(path)],
                [digest, path, language, code, now, created_by,
                 *(item for pair in defaults.items() for item in pair)],
            )
        except redis.exceptions.ResponseError as exc:
            raise GristmillError(str(exc)) from exc
        return self.by_hash(digest), bool(created)

    @redis_errors
    def by_hash(self, digest: str) -> ScriptVersion:
        fields = self.client.hgetall(self.keys.script(digest))
        if not fields:
            raise NotFound(f"no script version with hash {digest}")
        return ScriptVersion.from_redis(fields)

    @redis_errors
    def latest(self, path: str) -> ScriptVersion:
        digest = self.client.hget(self.keys.script_paths, path)
        if digest is None:
            raise NotFound(f"no script at path {path!r}; deploy one with `gristmill script deploy`")
        return self.by_hash(digest.decode())

    def get(self, ref: str) -> ScriptVersion:
        """A version by hash, or the latest at a path."""
        return self.by_hash(ref) if is_hash(ref) else self.latest(ref)

    @redis_errors
    def all_paths(self) -> dict[str, str]:
        """Every script path and its latest hash."""
        raw = self.client.hgetall(self.keys.script_paths)
        return {k.decode(): v.decode() for k, v in sorted(raw.items())}

    @redis_errors
    def history(self, path: str) -> list[str]:
        return [h.decode() for h in self.client.lrange(self.keys.script_history(path), 0, -1)]
