"""The Redis ACL users that deploy/ creates, checked on a real server.

The scripts that write the ACL file (Compose's redis-credentials service, the
Kubernetes init container) run here with sh, against temporary directories,
and a private server loads the result: a locked default user, a `gristmill` user
with every right, an `inbox` user that may only LPUSH gm:inbox, a `keda` user
that may only read the ready lists' lengths.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from gristmill.embedded import find_server_binary, free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
REDIS_K8S = ROOT / "deploy" / "k8s" / "redis.yaml"
START_TIMEOUT_S = 15.0
Server = Callable[[Path], int]  # starts a private server on an ACL file, returns its port
NO_RETRY = Retry(NoBackoff(), 0)  # a refusal is the answer under test, not a blip to retry


def _sh(script: str, tmp_path: Path) -> None:
    env = {**os.environ}
    if os.geteuid() != 0:  # chown to the images' uids needs root: pretend elsewhere
        shim = tmp_path / "shim"
        shim.mkdir()
        (shim / "chown").write_text("#!/bin/sh\nexit 0\n")
        (shim / "chown").chmod(0o755)
        env["PATH"] = f"{shim}:{env['PATH']}"
    done = subprocess.run(["sh", "-euc", script], capture_output=True, text=True, timeout=30,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def server_with(tmp_path: Path) -> Iterator[Server]:
    """Start a private server on an ACL file; yields a function (aclfile) -> port."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(aclfile: Path) -> int:
        port = free_port()
        binary = find_server_binary(os.environ.get("GRISTMILL_TEST_REDIS_SERVER"))
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path), "--aclfile", str(aclfile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # wait for the port to answer (NOAUTH is an answer)
            try:
                redis.Redis(port=port, socket_timeout=1, retry=NO_RETRY).ping()
            except redis.AuthenticationError:
                return port
            except redis.ConnectionError:
                if proc.poll() is not None:
                    pytest.fail(f"server exited with {proc.returncode}: see {aclfile}")
                if time.monotonic() > deadline:
                    pytest.fail("server did not answer")
                time.sleep(0.05)

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def _client(port: int, user: str, password: str) -> redis.Redis:
    return redis.Redis(port=port, username=user, password=password, socket_timeout=5,
                       retry=NO_RETRY)


def _check_common_users(port: int, gristmill: str, inbox: str) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, socket_timeout=5, retry=NO_RETRY).set("gm:x", "1")  # default user is locked
    with pytest.raises(redis.AuthenticationError):
        _client(port, "gristmill", "guessed").ping()
    full = _client(port, "gristmill", gristmill)
    full.hset("gm:{auth}:user:alice", "is_admin", "1")
    assert full.config_get("maxmemory-policy")
    producer = _client(port, "inbox", inbox)
    assert producer.lpush("gm:inbox", '{"path": "u/alice/hello"}') == 1
    for forbidden in (lambda: producer.lpush("gm:other", "x"),
                      lambda: producer.hset("gm:{auth}:user:alice", "is_admin", "1"),
                      lambda: producer.lrange("gm:inbox", 0, -1),
                      lambda: producer.config_get("*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            forbidden()


def test_compose_credentials_service_makes_working_users(tmp_path: Path, server_with: Server) -> None:
    """The redis-credentials script writes passwords once and an ACL file Redis enforces."""
    service = yaml.safe_load(COMPOSE.read_text())["services"]["redis-credentials"]
    assert service["entrypoint"] == ["sh", "-euc"]
    script = service["command"][0].replace("$$", "$")  # Compose's escape for a literal $
    creds = tmp_path / "credentials"
    creds.mkdir()
    script = script.replace("/credentials", str(creds))
    _sh(script, tmp_path)
    first = (creds / "gristmill-password").read_text()
    assert len(first) == 64 and oct((creds / "gristmill-password").stat().st_mode)[-3:] == "400"
    # Idempotent: a second run (every `compose up`) keeps the passwords.
    for name in ("users.acl", "gristmill-password", "inbox-password"):
        (creds / name).chmod(0o600)
    _sh(script, tmp_path)
    assert (creds / "gristmill-password").read_text() == first
    # The processes read the same file that Redis was configured from.
    env = yaml.safe_load(COMPOSE.read_text())["x-gristmill"]["environment"]
    assert env["GRISTMILL_REDIS_PASSWORD_FILE"] == "/run/gristmill/redis/gristmill-password"
    assert env["GRISTMILL_REDIS_URL"].startswith("redis://gristmill@")
    (creds / "users.acl").chmod(0o600)
    port = server_with(creds / "users.acl")
    _check_common_users(port, first, (creds / "inbox-password").read_text())


def test_kubernetes_init_container_makes_working_users(tmp_path: Path, server_with: Server) -> None:
    """The redis StatefulSet's init container renders the Secret's passwords into an ACL file."""
    statefulset = next(d for d in yaml.safe_load_all(REDIS_K8S.read_text()) if d["kind"] == "StatefulSet")
    (init,) = statefulset["spec"]["template"]["spec"]["initContainers"]
    assert init["command"] == ["sh", "-euc"]
    secrets, acl = tmp_path / "secrets", tmp_path / "acl"
    secrets.mkdir()
    acl.mkdir()
    passwords = {name: os.urandom(16).hex() for name in ("gristmill", "inbox", "keda")}
    for name, password in passwords.items():
        (secrets / f"{name}-password").write_text(password)
    # Kubernetes' escape for a literal $ in args, then this test's directories.
    script = init["args"][0].replace("$$", "$")
    script = script.replace("/secrets/", f"{secrets}/").replace("/acl/", f"{acl}/")
    _sh(script, tmp_path)
    port = server_with(acl / "users.acl")
    _check_common_users(port, passwords["gristmill"], passwords["inbox"])
    keda = _client(port, "keda", passwords["keda"])
    assert keda.llen("gm:{wg:default}:ready") == 0
    with pytest.raises(redis.exceptions.NoPermissionError):
        keda.llen("gm:inbox")
    with pytest.raises(redis.exceptions.NoPermissionError):
        keda.lpush("gm:{wg:default}:ready", "x")
