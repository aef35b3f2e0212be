"""The script store: immutable versions addressed by hash, a path pointing at the latest."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
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
# How long a producer trusts path -> latest hash: a version deployed by another
# process is run by path here at most this late (one deployed by this process, at once).
PATH_CACHE_S = 1.0
HEADER_CACHE_SIZE = 4096
HEADER_FIELDS = ("hash", "path", "language", "tag", "timeout_s", "retry", "lock_status", "lock_job")
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


@dataclass(frozen=True)
class ScriptHeader:
    """What enqueuing a version needs: everything but its code (which is never read for it)."""

    hash: str
    path: str
    language: str
    tag: str | None
    timeout_s: int | None
    retry: dict[str, Any] | None
    lock_status: str | None = None  # None or "locked": ready; "locking"; "failed"
    lock_job: str | None = None

    @property
    def settled(self) -> bool:
        """A header that no longer changes (its lock is made), so it may be cached."""
        return self.lock_status in (None, "locked")


class ScriptStore:
    """Reads and writes script versions."""

    def __init__(self, client: redis.Redis, keys: Keys, *, clock: Clock = now_ms) -> None:
        self.client = client
        self.keys = keys
        self.clock = clock
        # hash -> header (versions are immutable: kept while used); path -> (hash, read at).
        self._headers: OrderedDict[str, ScriptHeader] = OrderedDict()
        self._paths: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    @redis_errors
    def deploy(
        self, path: str, language: str, code: str, *, created_by: str = "u/admin",
        timeout_s: int | None = None, retry: dict[str, Any] | None = None, tag: str | None = None,
        limits: dict[str, int] | None = None, lock_fields: dict[str, str] | None = None,
    ) -> tuple[ScriptVersion, bool]:
        """Save a version (idempotent); return it and whether it is new.

        ``limits`` are sandbox limits for its jobs (``memory_mb``, ``max_procs``,
        ``file_mb``, ``open_files``, ``disk_mb``); a worker applies the lower of
        them and its own. ``lock_fields`` (``lock_status``, ``lock``, ``lock_job``,
        ``requirements``; see deps/locking.py) are written with a new version and
        are not part of its hash.
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
                [self.keys.script(digest), self.keys.script_paths, self.keys.script_history(path),
                 self.keys.script_locked],
                [digest, path, language, code, now, created_by,
                 *(item for pair in {**defaults, **(lock_fields or {})}.items()
                   for item in pair)],
            )
        except redis.exceptions.ResponseError as exc:
            raise GristmillError(str(exc)) from exc
        with self._lock:
            self._paths.pop(path, None)  # this process runs its own deploy by path at once
        return self.by_hash(digest), bool(created)

    def header(self, ref: str) -> ScriptHeader:
        """A version's header by hash, or the runnable one at a path (see ``runnable``),
        without reading its code.

        Cached: a hash's header once its lock is made (it never changes then), a
        path's runnable hash for PATH_CACHE_S. NotFound when there is none.
        """
        digest = ref if is_hash(ref) else self._latest_hash(ref)
        with self._lock:
            found = self._headers.get(digest)
            if found is not None:
                self._headers.move_to_end(digest)
                return found
        found = self._read_header(digest)
        if not found.settled:
            return found
        with self._lock:
            self._headers[digest] = found
            if len(self._headers) > HEADER_CACHE_SIZE:
                self._headers.popitem(last=False)
        return found

    def _latest_hash(self, path: str) -> str:
        now = time.monotonic()
        with self._lock:
            cached = self._paths.get(path)
        if cached is not None and now - cached[1] < PATH_CACHE_S:
            return cached[0]
        digest = self._path_hash(path)
        with self._lock:
            if len(self._paths) > HEADER_CACHE_SIZE:
                self._paths.clear()
            self._paths[path] = (digest, now)
        return digest

    @redis_errors
    def _path_hash(self, path: str) -> str:
        digest = self.client.hget(self.keys.script_locked, path)
        if digest is not None:
            return str(digest.decode())
        return self.runnable(path).hash  # no version locked yet: the rare, slower path

    @redis_errors
    def _read_header(self, digest: str) -> ScriptHeader:
        values = self.client.hmget(self.keys.script(digest), HEADER_FIELDS)
        data = {name: None if raw is None else raw.decode()
                for name, raw in zip(HEADER_FIELDS, values, strict=True)}
        if data["hash"] is None:
            raise NotFound(f"no script version with hash {digest}")
        return ScriptHeader(
            hash=str(data["hash"]), path=str(data["path"]), language=str(data["language"]),
            tag=data["tag"],
            timeout_s=None if data["timeout_s"] is None else int(data["timeout_s"]),
            retry=None if data["retry"] is None else json.loads(data["retry"]),
            lock_status=data["lock_status"], lock_job=data["lock_job"],
        )

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
    def runnable(self, path: str) -> ScriptVersion:
        """The version a run by path uses: the latest whose lock is ready (or needs none).

        With none ready yet, the latest version: its job waits for its lock, or
        is refused when the lock failed.
        """
        digest = self.client.hget(self.keys.script_locked, path)
        if digest is not None:
            return self.by_hash(digest.decode())
        latest = self.latest(path)
        for older in reversed(self.history(path)):  # a failed relock left no pointer
            version = latest if older == latest.hash else self.by_hash(older)
            if version.runnable:
                return version
        return latest

    @redis_errors
    def set_lock(self, digest: str, job_id: str, status: str, lock: str = "",
                 requirements: str = "") -> bool:
        """Record a lock (``locked``), its failure (``failed``) or a relock (``locking``)
        made by dependencies job ``job_id``; False when a later relock superseded it."""
        version = self.by_hash(digest)
        return bool(luascripts.SET_LOCK(
            self.client,
            [self.keys.script(digest), self.keys.script_locked, self.keys.script_history(version.path)],
            [job_id, status, lock, requirements],
        ))

    @redis_errors
    def cached_lock(self, digest: str) -> str | None:
        raw = self.client.get(self.keys.lock_cache(digest))
        return None if raw is None else str(raw.decode())

    @redis_errors
    def cache_lock(self, digest: str, lock: str, ttl_s: int) -> None:
        self.client.set(self.keys.lock_cache(digest), lock, ex=ttl_s)

    @redis_errors
    def all_paths(self) -> dict[str, str]:
        """Every script path and its latest hash."""
        raw = self.client.hgetall(self.keys.script_paths)
        return {k.decode(): v.decode() for k, v in sorted(raw.items())}

    @redis_errors
    def history(self, path: str) -> list[str]:
        return [h.decode() for h in self.client.lrange(self.keys.script_history(path), 0, -1)]
