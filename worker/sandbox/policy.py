"""What a worker enforces on its jobs, and the request it hands the launcher for each one.

The launcher (``launch.py`` beside this file) does the isolating; this module
decides *what*: the mode (``isolated`` where the machine allows it, ``shared``
only when the operator said ``--unsafe-shared-user``), the limits, the
network, a fresh uid per job, and which host paths the job may see read-only
(the system, this Python, our own packages: nothing else).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from common.errors import ConfigError

if TYPE_CHECKING:
    from worker.sandbox.warm import ForkServer

LAUNCHER = str(Path(__file__).with_name("launch.py"))
# Our own top-level packages: job code may `import gristmill` (the in-job client), which
# needs these (tests/unit/test_layering.py checks the list covers its imports); deps/ also
# holds the resolver's wrapper, which dependencies jobs run.
PACKAGES = ("common", "auth", "vault", "jobs", "schedules", "flows", "deps", "storage", "worker",
            "scheduler", "api", "gristmill")
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Jobs get uids of their own, far above any real account's.
UID_BASE = 1_000_000_000
UID_SPAN = 1 << 24
PROBE_TIMEOUT_S = 10.0

Mode = Literal["isolated", "shared"]
Network = Literal["host", "none"]


@dataclass(frozen=True)
class Limits:
    """Per-job limits. ``memory_mb`` bounds the address space (RLIMIT_AS), ``max_procs`` the
    processes and threads of the job's uid, ``file_mb`` one file's size, ``disk_mb`` the
    job's private filesystem (its directory and /tmp, in memory)."""

    memory_mb: int = 2048
    max_procs: int = 512
    file_mb: int = 1024
    open_files: int = 1024
    disk_mb: int = 1024

    def tightened(self, wanted: Mapping[str, int] | None) -> Limits:
        """These limits lowered to what a script asks for; a script never raises them."""
        if not wanted:
            return self
        lower = {name: min(value, wanted[name]) for name, value in asdict(self).items()
                 if name in wanted}
        return replace(self, **lower)


@dataclass(frozen=True)
class Sandbox:
    """How this worker runs every job; :meth:`request` is what one job's launcher gets."""

    mode: Mode
    limits: Limits
    network: Network = "host"
    binds: tuple[str, ...] = ()
    root: str = ""
    shared_dirs: tuple[str, ...] = ()  # read-write for every job: the operator's choice
    # Warm execution: jobs are forked from this server; None runs one launcher per job (cold).
    server: ForkServer | None = field(default=None, compare=False)

    def warm(self) -> Sandbox:
        """This sandbox with a fork server of its own (start it before reading secrets)."""
        from worker.sandbox import template
        from worker.sandbox.warm import ForkServer

        # A shared job keeps the host's PID namespace: a launcher per job, as cold.
        isolated = self.mode == "isolated"
        root = template.spec(self.root, self.binds, self.shared_dirs, self.limits.disk_mb) \
            if isolated else None
        return replace(self, server=ForkServer.start(pid1=isolated, root=root))

    def uses_template(self) -> bool:
        """Whether this sandbox's jobs ask for the root its fork server laid out once
        (``template.py``): a job with binds of its own (a locked environment) does not."""
        from worker.sandbox import template

        root = self.server.root if self.server is not None else None
        return root is not None and template.matches(
            root, template.spec(self.root, self.binds, self.shared_dirs, self.limits.disk_mb))

    def command(self) -> list[str]:
        """The launcher: this interpreter, isolated from the environment and site-packages."""
        return [sys.executable, "-I", "-S", LAUNCHER]

    def request(self, argv: list[str], env: dict[str, str], files: dict[str, str],
                result_fd: int | None, limits: Limits | None = None, *,
                inprocess: bool = False) -> bytes:
        """One job's length-prefixed request (see ``launch.py`` for the fields; ``inprocess``:
        the fork server runs this python3 job in the forked process, see ``forkserver.py``)."""
        body = json.dumps({
            "inprocess": inprocess,
            "mode": self.mode, "argv": argv, "env": env, "files": files,
            "limits": asdict(limits or self.limits), "uid": UID_BASE + secrets.randbelow(UID_SPAN),
            "network": self.network, "binds": list(self.binds),
            "shared_dirs": list(self.shared_dirs), "root": self.root,
            "result_fd": result_fd,
        }).encode()
        return struct.pack(">I", len(body)) + body

    def describe(self) -> dict[str, object]:
        """What is enforced, for the worker's start-up log line."""
        limits = asdict(self.limits)
        execution = "warm (forked from a fork server)" if self.server is not None else \
            "cold (a launcher per job)"
        if self.mode == "shared":
            return {"sandbox": "shared (UNSAFE: job code runs with the worker's own rights)",
                    "execution": execution, **limits}
        return {"sandbox": "isolated (own uid, PID/mount/IPC namespaces, private root)",
                "execution": execution, "network": self.network,
                "shared_dirs": list(self.shared_dirs), **limits}


def visible_paths() -> tuple[str, ...]:
    """Host paths a job sees read-only: the system, this Python, our packages; nothing nested."""
    candidates = [*SYSTEM_PATHS, sys.base_prefix, sys.base_exec_prefix, sys.prefix,
                  sys.exec_prefix, *_package_dirs()]
    chosen: list[str] = []
    for path in sorted({os.path.normpath(p) for p in candidates if os.path.lexists(p)}):
        if not any(path == c or path.startswith(c.rstrip("/") + "/") for c in chosen):
            chosen.append(path)
    return tuple(chosen)


def _package_dirs() -> list[str]:
    dirs = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(spec.submodule_search_locations)
    return dirs


def isolation_problem() -> str | None:
    """Why jobs cannot be isolated on this machine, or None when they can."""
    if not sys.platform.startswith("linux"):
        return f"job isolation needs Linux namespaces; this is {sys.platform}"
    if os.geteuid() != 0:
        return ("job isolation needs the worker to run as root (or with CAP_SYS_ADMIN, "
                "CAP_SETUID, CAP_SETGID) to give each job its own uid and namespaces")
    root = sandbox_root()
    try:
        probe = subprocess.run(
            [sys.executable, "-I", "-S", LAUNCHER, "--probe", root], capture_output=True,
            timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL, env={},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the sandbox probe failed: {exc}"
    if probe.returncode != 0:
        reason = probe.stderr.decode(errors="replace").strip() or f"exit {probe.returncode}"
        return f"namespaces are not available here ({reason})"
    return None


def sandbox_root() -> str:
    """The (empty, root-only) directory each job's private root is mounted on, in its namespace."""
    base = Path("/run") if Path("/run").is_dir() and os.access("/run", os.W_OK) else \
        Path(tempfile.gettempdir())
    root = base / "gristmill-sandbox"
    root.mkdir(mode=0o700, exist_ok=True)
    return str(root)


def choose(limits: Limits, network: Network, *, unsafe_shared_user: bool,
           shared_dirs: tuple[str, ...] = ()) -> Sandbox:
    """The sandbox this worker will use.

    ``unsafe_shared_user`` asks for the shared mode outright; otherwise jobs are
    isolated, or ConfigError says why they cannot be.
    """
    for path in shared_dirs:
        if not os.path.isabs(path) or not os.path.isdir(path):
            raise ConfigError(f"a job shared directory must be an existing absolute path: {path!r}")
    if unsafe_shared_user:
        if network == "none":
            raise ConfigError("--job-network none needs isolated jobs, not --unsafe-shared-user")
        return Sandbox("shared", limits, network)
    problem = isolation_problem()
    if problem is not None:
        raise ConfigError(
            f"cannot sandbox jobs: {problem}. Fix that, or start the worker with "
            "--unsafe-shared-user to run job code with the worker's own rights (single-user "
            "machines only)"
        )
    return Sandbox("isolated", limits, network, visible_paths(), sandbox_root(),
                   tuple(os.path.normpath(p) for p in shared_dirs))
