"""Connecting to Redis: one client per process, the version check, error conversion."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar
from urllib.parse import urlparse

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.errors import ConfigError, RedisUnavailable

MIN_VERSION = (7, 0)
P = ParamSpec("P")
R = TypeVar("R")


# Server states that pass: the command was refused, nothing was done, and the same
# command succeeds later (UNBLOCKED: a blocking call cut short by a failover).
# redis-py maps some to classes; the rest keep their code.
_PASSING_STATES = (
    redis.exceptions.OutOfMemoryError,  # OOM: at maxmemory with noeviction
    redis.exceptions.ReadOnlyError,  # READONLY: a replica (failover in progress)
    redis.exceptions.ClusterDownError,  # MASTERDOWN (a subclass), CLUSTERDOWN
    redis.exceptions.TryAgainError,  # TRYAGAIN: a slot migrating
)
_PASSING_CODES = re.compile(
    r"(?:^|caused error: )(BUSY|MASTERDOWN|MISCONF|NOREPLICAS|LOADING|TRYAGAIN|CLUSTERDOWN|UNBLOCKED)\b"
)
_ADVICE = {
    redis.exceptions.OutOfMemoryError: "Redis is at its maxmemory limit: free memory (shorter "
    "retention_s, fewer queued jobs) or raise maxmemory",
    redis.exceptions.ReadOnlyError: "Redis is a read-only replica (a failover?): point "
    "GRISTMILL_REDIS_URL at the primary",
}


def passing_state(exc: BaseException) -> bool:
    """True for a Redis error that says the server cannot serve now, not that we erred."""
    if isinstance(exc, _PASSING_STATES):
        return True
    return isinstance(exc, redis.exceptions.ResponseError) and bool(_PASSING_CODES.search(str(exc)))


def redis_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Convert redis-py errors that a retry can outlive into :class:`RedisUnavailable`.

    That is a lost or refused connection, a timeout, and the server states of
    :func:`passing_state` (OOM, READONLY, LOADING, BUSY, MASTERDOWN, ...). Other
    errors (a wrong type, a script bug) stay what they are: retrying cannot help.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except redis.exceptions.AuthenticationError as exc:
            raise ConfigError(
                f"Redis refused our credentials ({exc}): check the user and password in "
                "GRISTMILL_REDIS_URL or GRISTMILL_REDIS_PASSWORD_FILE"
            ) from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise RedisUnavailable(
                f"Redis is unreachable ({exc}): is `gristmill up` running, or "
                "GRISTMILL_REDIS_URL set to a running server?"
            ) from exc
        except redis.exceptions.RedisError as exc:
            if not passing_state(exc):
                raise
            advice = _ADVICE.get(type(exc), "retrying until it passes")
            raise RedisUnavailable(f"Redis refused the command ({exc}): {advice}") from exc

    return wrapper


def max_block_s(client: redis.Redis) -> float | None:
    """The longest blocking wait (BLMOVE, BLPOP, XREAD BLOCK) safe on ``client``'s connections.

    A blocking call answers only when its block time ends, and Redis ends it up
    to one ``hz`` tick (100 ms) late; a socket timeout that is not longer cuts
    the connection first, and the call fails for nothing. None: no socket timeout.
    """
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if timeout is None:
        return None
    return max(0.01, float(timeout) - max(0.25, float(timeout) * 0.1))


def connect(url: str, *, password: str | None = None,
            socket_timeout: float | None = 30.0) -> redis.Redis:
    """A client for ``url`` (``password``, if given, overrides the URL's);
    :class:`common.store.Store` keeps blocking calls within :func:`max_block_s` of
    ``socket_timeout``."""
    extra = {} if password is None else {"password": password}
    return redis.Redis.from_url(
        url,
        **extra,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=0,
        client_name="gristmill",
        # No silent re-sends: a command whose reply was lost may have run (BLMOVE,
        # LPUSH, XADD). Our loops retry where a retry is safe, and say so.
        retry=Retry(NoBackoff(), 0),
    )


def has_credentials(url: str, password: str | None) -> bool:
    """True when connecting with ``url`` (and ``password``) authenticates at all."""
    return password is not None or urlparse(url).password is not None


def server_version(client: redis.Redis) -> tuple[str, tuple[int, ...]]:
    """The server's product name and version (valkey reports both)."""
    info = client.info("server")
    if "valkey_version" in info:
        name, text = "valkey", str(info["valkey_version"])
    else:
        name, text = "redis", str(info["redis_version"])
    return name, tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


@redis_errors
def check_version(client: redis.Redis) -> str:
    """Refuse servers older than Redis 7.0 (BLMOVE, ZRANGE BYSCORE, SET GET are needed)."""
    name, version = server_version(client)
    text = ".".join(map(str, version))
    # Valkey 7.2+ speaks the Redis 7.2 protocol; its version numbers started at 7.2.
    if version < MIN_VERSION:
        raise ConfigError(
            f"{name} {text} is too old: Gristmill needs Redis 7.0 or newer (or Valkey 7.2+); "
            "upgrade the server or point GRISTMILL_REDIS_URL at a newer one"
        )
    return f"{name} {text}"


def ping(client: redis.Redis, timeout_s: float = 0.0) -> None:
    """Check the server answers; retry up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            redis_errors(client.ping)()
            return
        except Exception:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
