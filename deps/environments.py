"""The environment cache of one host: each lock installed once, in a directory named by its hash.

``<deps_dir>/envs/<lock hash>/`` holds the lock's packages (``uv pip install
--target``), complete once ``.complete`` exists in it; jobs get it read-only
on their ``PYTHONPATH``. A build happens in a temporary sibling directory,
renamed into place when it succeeded, under an exclusive ``flock`` on
``<lock hash>.lock``, so concurrent first runs on one host (any number of
workers and slots) build it once and the others wait for it. uv's own cache
(``<deps_dir>/uv-cache``) makes a build of packages seen before a copy.

What is installed is a lock checked by :func:`deps.resolver.parse_lock`
(``name==version`` lines) and only wheels: installing runs no package's code
and reads no file a requirement names, so it is done here, on the host.

With an object store (``remote``), a built environment is also uploaded as
``envs/<lock hash>.tar.gz``, and a host that lacks it downloads that archive
instead of building. The store is a cache: when it fails, the host builds,
and an upload that fails is only reported.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from common.errors import GristmillError
from deps.resolver import IndexOptions, lock_hash, network_env

COMPLETE = ".complete"
BUILD_TIMEOUT_S = 900.0


class Remote(Protocol):
    """What the cache needs of an object store (``storage.objects.ObjectStore``); its
    failures are GristmillErrors."""

    def put(self, key: str, data: bytes | Path) -> None: ...
    def download(self, key: str, target: Path) -> None: ...


def archive_key(digest: str) -> str:
    return f"envs/{digest}.tar.gz"


class InstallError(RuntimeError):
    """A lock could not be installed; the message carries uv's explanation."""


@dataclass(frozen=True)
class Environment:
    """A ready environment: its directory, and whether this call built it."""

    path: Path
    lock_hash: str
    built: bool
    seconds: float = 0.0


class EnvironmentCache:
    """Installs locks into content-addressed directories under ``root``."""

    def __init__(self, root: Path, uv: str, options: IndexOptions,
                 remote: Remote | None = None) -> None:
        self.remote = remote
        self.root = Path(root)
        self.envs = self.root / "envs"
        self.uv_cache = self.root / "uv-cache"
        self.uv = uv
        self.options = options

    def path_of(self, lock: str) -> Path:
        return self.envs / lock_hash(lock)

    def ensure(self, lock: str, log: Callable[[str], None] = lambda _line: None) -> Environment:
        """The environment of ``lock``, built first if this host has none (once per host)."""
        digest = lock_hash(lock)
        target = self.envs / digest
        if (target / COMPLETE).exists():
            return Environment(target, digest, built=False)
        self.envs.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        os.chmod(self.envs, 0o755)
        with open(self.envs / f"{digest}.lock", "a+") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # another build of this lock finishes first
            if (target / COMPLETE).exists():
                return Environment(target, digest, built=False)
            started = time.monotonic()
            if self._download(digest, lock, target, log):
                return Environment(target, digest, built=False,
                                   seconds=time.monotonic() - started)
            log(f"[gristmill] installing environment {digest} "
                f"({len(lock.splitlines())} packages) ...")
            self._build(lock, target, log)
            seconds = time.monotonic() - started
            log(f"[gristmill] environment {digest} installed in {seconds:.1f} s")
            self._upload(digest, target, log)
            return Environment(target, digest, built=True, seconds=seconds)

    def _download(self, digest: str, lock: str, target: Path,
                  log: Callable[[str], None]) -> bool:
        """Fetch and unpack the archive another host uploaded; False when there is none."""
        if self.remote is None:
            return False
        staging = Path(tempfile.mkdtemp(prefix=f"{digest}.get-", dir=self.envs))
        archive = staging.with_suffix(".tar.gz")
        try:
            self.remote.download(archive_key(digest), archive)
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(staging, filter="data")  # no links out, no devices, no owners
            if (staging / COMPLETE).read_text() != lock:
                raise InstallError("the archive holds another lock")
        except (GristmillError, OSError, tarfile.TarError, InstallError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if "not found" not in str(exc).lower() and "No such" not in str(exc):
                log(f"[gristmill] environment {digest}: the object store failed ({exc}); "
                    "building it here")
            return False
        finally:
            archive.unlink(missing_ok=True)
        _readable(staging)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(staging, target)
        log(f"[gristmill] environment {digest} downloaded from the object store")
        return True

    def _upload(self, digest: str, target: Path, log: Callable[[str], None]) -> None:
        if self.remote is None:
            return
        archive = target.with_name(f"{digest}.put-{os.getpid()}.tar.gz")
        try:
            with tarfile.open(archive, "w:gz") as tar:
                for entry in sorted(target.iterdir()):
                    tar.add(entry, arcname=entry.name)
            self.remote.put(archive_key(digest), archive)
        except (GristmillError, OSError, tarfile.TarError) as exc:
            log(f"[gristmill] environment {digest}: not uploaded to the object store ({exc})")
        finally:
            archive.unlink(missing_ok=True)

    def _build(self, lock: str, target: Path, log: Callable[[str], None]) -> None:
        staging = target.with_name(f"{target.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
        shutil.rmtree(target, ignore_errors=True)  # a build that died before its marker
        staging.mkdir(mode=0o755)
        lock_file = staging / "gristmill.lock.txt"
        lock_file.write_text(lock)
        argv = [self.uv, "pip", "install", "--target", str(staging), "--no-deps",
                "--only-binary", ":all:", "--no-config", "--link-mode", "copy", "--color",
                "never", "--no-progress", "--python", sys.executable, "--cache-dir",
                str(self.uv_cache), *self.options.args(), "-r", str(lock_file)]
        env = {"PATH": os.environ.get("PATH", os.defpath), "UV_PYTHON_DOWNLOADS": "never",
               "UV_NO_CONFIG": "1", "HOME": str(self.root), **network_env()}
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=env,
                                  timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)
            raise InstallError(f"installing the lock took longer than {BUILD_TIMEOUT_S:g} s") from None
        for line in (done.stdout + done.stderr).splitlines():
            log(line)
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise InstallError(f"uv could not install the lock (exit {done.returncode}):\n{tail}")
        _readable(staging)
        (staging / COMPLETE).write_text(lock)
        os.rename(staging, target)

    def prune(self, keep: set[str], *, dry_run: bool = False) -> list[str]:
        """Remove the environments whose lock hash is not in ``keep``; their hashes."""
        if not self.envs.is_dir():
            return []
        removed = []
        for entry in sorted(self.envs.iterdir()):
            if not entry.is_dir() or entry.name in keep:
                continue
            removed.append(entry.name)
            if dry_run:
                continue
            with open(self.envs / f"{entry.name.split('.')[0]}.lock", "a+") as held:
                fcntl.flock(held, fcntl.LOCK_EX)  # never under a build
                shutil.rmtree(entry, ignore_errors=True)
        return removed


def _readable(root: Path) -> None:
    """World-readable (and traversable) for every job's uid; never writable but by us."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)
