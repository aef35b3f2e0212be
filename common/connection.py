"""Connecting to Redis: one client per process, the version check, error conversion."""

from __future__ import annotations

import functools
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


def redis_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Convert redis-py connection errors into :class:`RedisUnavailable`."""

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

    return wrapper


def connect(url: str, *, password: str | None = None,
            socket_timeout: float | None = 30.0) -> redis.Redis:
    """A client for ``url`` (``password``, if given, overrides the URL's); blocking calls must
    use timeouts below ``socket_timeout``."""
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
