"""Connecting to Redis: one client per process, the version check, error conversion.

``redis://`` / ``rediss://`` name one server; ``redis+cluster://`` /
``rediss+cluster://`` name a Redis (or Valkey) Cluster by one or more of its
nodes (``redis+cluster://user:password@host:port,host:port``), and the client is
a :class:`redis.cluster.RedisCluster`. Both answer the same commands; every key
one command or script touches shares a hash tag (common/keys.py), so nothing
else in the code knows which one it holds.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar
from urllib.parse import unquote, urlparse

import redis
import redis.cluster
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


# A cluster client's own errors (not RedisError) when no node serves a slot now: a primary
# failed and its replica is not promoted yet, or every node it knows is unreachable. Its
# other errors ("all keys must map to the same key slot", a cross-slot transaction) are
# bugs and stay what they are, so that a test on a cluster fails on them.
_CLUSTER_PASSING = re.compile(
    r"cannot be connected|slots are not covered|could not agree|not covered by the cluster"
)


DEFAULT_PORT = 6379  # Redis's own, for a cluster URL's node without a port

def passing_state(exc: BaseException) -> bool:
    """True for a Redis error that says the server cannot serve now, not that we erred."""
    if isinstance(exc, (*_PASSING_STATES, redis.exceptions.SlotNotCoveredError)):
        return True
    if type(exc) is redis.exceptions.RedisClusterException:
        return bool(_CLUSTER_PASSING.search(str(exc)))
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
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
            if not passing_state(exc):
                raise
            advice = _ADVICE.get(type(exc), "retrying until it passes")
            raise RedisUnavailable(f"Redis refused the command ({exc}): {advice}") from exc

    return wrapper


_DEFAULT_SOCKET_TIMEOUT = inspect.signature(
    redis.connection.AbstractConnection.__init__).parameters["socket_timeout"].default


def max_block_s(client: redis.Redis) -> float | None:
    """The longest blocking wait (BLMOVE, BLPOP, XREAD BLOCK) safe on ``client``'s connections.

    A blocking call answers only when its block time ends, and Redis ends it up
    to one ``hz`` tick (100 ms) late; a socket timeout that is not longer cuts
    the connection first, and the call fails for nothing. None: no socket timeout.
    """
    kwargs = client.nodes_manager.connection_kwargs if is_cluster(client) \
        else client.connection_pool.connection_kwargs
    # A client made without one has redis-py's default (5 s since redis-py 8, None before).
    return block_limit_s(kwargs.get("socket_timeout", _DEFAULT_SOCKET_TIMEOUT))


def block_limit_s(socket_timeout_s: float | None) -> float | None:
    """The longest blocking wait safe under a socket timeout of ``socket_timeout_s`` (see
    :func:`max_block_s`): 10 % of it, at least 0.25 s, kept in hand. None: no timeout."""
    if socket_timeout_s is None:
        return None
    timeout = float(socket_timeout_s)
    return max(0.01, timeout - max(0.25, timeout * 0.1))


def connect(url: str, *, password: str | None = None,
            socket_timeout: float | None = 30.0) -> redis.Redis:
    """A client for ``url`` (``password``, if given, overrides the URL's);
    :class:`common.store.Store` keeps blocking calls within :func:`max_block_s` of
    ``socket_timeout``."""
    extra = {} if password is None else {"password": password}
    options = dict(
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        health_check_interval=0,
        client_name="gristmill",
        # No silent re-sends: a command whose reply was lost may have run (BLMOVE,
        # LPUSH, XADD). Our loops retry where a retry is safe, and say so. A cluster
        # client still follows MOVED / ASK redirections and waits out TRYAGAIN itself:
        # those answers say the command was not run.
        retry=Retry(NoBackoff(), 0),
    )
    if is_cluster_url(url):
        return cluster_client(url, **extra, **options)
    return redis.Redis.from_url(url, **extra, **options)


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://`` URLs."""
    return urlparse(url).scheme in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The ``(host, port)`` of each node a cluster URL names (DEFAULT_PORT when not given)."""
    netloc = urlparse(url).netloc.rpartition("@")[2]
    nodes = []
    for part in filter(None, netloc.split(",")):
        if part.startswith("["):  # [IPv6]:port
            host, _, rest = part[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = part.partition(":")
        try:
            nodes.append((host, int(port or DEFAULT_PORT)))
        except ValueError:
            raise ConfigError(f"bad node {part!r} in the cluster URL: use host:port") from None
    if not nodes:
        raise ConfigError("a redis+cluster:// URL names no node: use "
                          "redis+cluster://user:password@host:port,host:port")
    return nodes


def cluster_client(url: str, *, password: str | None = None, **options: object) -> redis.Redis:
    """A :class:`redis.cluster.RedisCluster` on the nodes of ``url`` (see :func:`cluster_nodes`)."""
    parts = urlparse(url)
    if parts.path not in ("", "/", "/0"):
        raise ConfigError(f"a cluster has only database 0, not {parts.path.lstrip('/')!r}: "
                          "drop the database from the redis+cluster:// URL")
    auth = parts.netloc.rpartition("@")[0]
    user = auth.partition(":")[0]
    in_url = unquote(secret) if (secret := auth.partition(":")[2]) else None
    credentials = {"username": unquote(user) or None,
                   "password": in_url if password is None else password}
    nodes = [redis.cluster.ClusterNode(host, port) for host, port in cluster_nodes(url)]
    # Unlike a single server's client, a cluster client reads the slot map at construction.
    build = redis_errors(redis.cluster.RedisCluster)
    return build(startup_nodes=nodes, ssl=CLUSTER_SCHEMES[parts.scheme] == "rediss",
                 **credentials, **options)


def is_cluster(client: redis.Redis) -> bool:
    """True when ``client`` is a cluster client (see :func:`connect`)."""
    return isinstance(client, redis.cluster.RedisCluster)


def queue_delete(pipe: redis.client.Pipeline, *keys: str) -> None:
    """Queue ``DEL keys`` (all in one slot) in a pipeline: a cluster pipeline's ``delete``
    takes one key, while a raw DEL of keys of one slot is routed like any command."""
    pipe.execute_command("DEL", *keys)


def move_all_back(client: redis.Redis, source: str, destination: str) -> int:
    """Move every element of the list ``source`` to the head of ``destination``, keeping
    their order (both in one slot: one LMOVE each); how many. A dead process's held ids go
    back to their queue this way."""
    moved = 0
    while client.lmove(source, destination, "RIGHT", "LEFT") is not None:
        moved += 1
    return moved


def has_credentials(url: str, password: str | None) -> bool:
    """True when connecting with ``url`` (and ``password``) authenticates at all."""
    return password is not None or urlparse(url).password is not None


def server_version(client: redis.Redis) -> tuple[str, tuple[int, ...]]:
    """The server's product name and version (valkey reports both); on a cluster, the
    oldest of its primaries'."""
    if is_cluster(client):
        return min(server_version(node.redis_connection) for node in client.get_primaries())
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
