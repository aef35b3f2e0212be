"""The long-running processes: `gristmill worker`, `scheduler` and `up` (a whole fleet)."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from common import log, metrics
from common.connection import check_version, connect, has_credentials
from common.errors import ConfigError, RedisUnavailable
from common.hardening import forbid_inspection
from common.retry import Backoff
from common.settings import EMBEDDED_REDIS_PORT, REDIS_URL_FILE, Settings
from gristmill.client import Gristmill
from gristmill.stop_signals import StopSignals
from gristmill.supervisor import Child, Output, json_mode, pump, stop_all


def add_process_commands(sub: Any) -> None:
    p = sub.add_parser("up", help="run a whole fleet here, on an embedded Redis if none is set")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--concurrency", type=int, default=4, help="jobs per worker (default 4)")
    p.add_argument("--group", default="default", help="worker group of the workers")
    p.add_argument("--redis-port", type=int, default=EMBEDDED_REDIS_PORT)
    p.add_argument("--appendfsync", choices=["everysec", "always"], default="everysec",
                   help="embedded Redis: fsync every write (always) or every second")
    p.add_argument("--api-port", type=int, default=8000, help="HTTP API port (0: no API)")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="first metrics port: scheduler on it, workers on the next ones")
    p.add_argument("--grace", type=float, default=30.0, help="seconds running jobs get to finish")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("api", help="serve the HTTP API and /metrics")
    p.add_argument("--host", help="listen address (default GRISTMILL_API_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default GRISTMILL_API_PORT, 8000)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="run one worker process")
    p.add_argument("--group", default="default")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--metrics-port", type=int, default=0, help="serve /metrics here (0: off)")
    p.add_argument("--grace", type=float, default=30.0, help="seconds running jobs get to finish")
    p.add_argument("--init-script", metavar="FILE",
                   help="run FILE once, sandboxed like a job, before claiming anything (.py: "
                   "python3 main(), else bash); a failure stops the worker (default "
                   "GRISTMILL_INIT_SCRIPTS[group], else GRISTMILL_INIT_SCRIPT)")
    p.add_argument("--dedicated", action="append", default=[], metavar="PATH",
                   help="keep this python3 script imported in a long-lived sandboxed process and "
                   "call its main per job (module state persists between its jobs); repeatable")
    p.add_argument("--dedicated-tag", action="append", default=[], metavar="TAG",
                   help="the same for every python3 script whose jobs carry this tag; repeatable")
    p.add_argument("--dedicated-threads", type=int, default=1, metavar="N",
                   help="a dedicated sync main runs up to N jobs at once on N threads of its "
                   "process (default 1: one at a time; main must then be thread-safe)")
    p.add_argument("--dedicated-processes", type=int, default=0, metavar="N",
                   help="sandboxed processes per dedicated script version at most, each its own "
                   "interpreter and module state, started as jobs need them (default: "
                   "--concurrency; an async main uses one)")
    _add_sandbox_options(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("scheduler", help="run one scheduler process (several may run)")
    p.add_argument("--metrics-port", type=int, default=0, help="serve /metrics here (0: off)")
    p.set_defaults(func=cmd_scheduler)


def _add_sandbox_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unsafe-shared-user", action="store_true",
                   help="where jobs cannot be isolated, run them with this process's own rights "
                   "(UNSAFE: job code can read everything the worker can)")
    p.add_argument("--job-shared-dir", action="append", default=[], metavar="DIR",
                   help="a host directory every job may read and write (repeatable)")
    p.add_argument("--job-network", choices=["host", "none"],
                   help="jobs' network (default GRISTMILL_JOB_NETWORK, host)")
    p.add_argument("--job-exec", choices=["warm", "cold"],
                   help="warm: fork jobs from a fork server; cold: a launcher per job "
                   "(default GRISTMILL_JOB_EXEC, warm)")
    for name, what in (("memory-mb", "address space, MiB"), ("max-procs", "processes"),
                       ("file-mb", "largest file, MiB"), ("open-files", "open files"),
                       ("disk-mb", "private filesystem, MiB")):
        env_name = "GRISTMILL_JOB_" + name.upper().replace("-", "_")
        p.add_argument(f"--job-{name}", type=int, metavar="N",
                       help=f"per-job limit: {what} (default {env_name})")


def sandbox_for(settings: Settings, ns: argparse.Namespace) -> Any:
    """The worker's sandbox from its settings and options (ConfigError if it cannot isolate)."""
    from worker.sandbox.policy import Limits, choose

    def pick(option: int | None, default: int) -> int:
        return default if option is None else option

    limits = Limits(
        memory_mb=pick(ns.job_memory_mb, settings.job_memory_mb),
        max_procs=pick(ns.job_max_procs, settings.job_max_procs),
        file_mb=pick(ns.job_file_mb, settings.job_file_mb),
        open_files=pick(ns.job_open_files, settings.job_open_files),
        disk_mb=pick(ns.job_disk_mb, settings.job_disk_mb),
    )
    sandbox = choose(limits, ns.job_network or settings.job_network,
                     unsafe_shared_user=ns.unsafe_shared_user, shared_dirs=tuple(ns.job_shared_dir))
    # The fork server is a fresh interpreter with an empty environment: nothing of this
    # process (its settings, secrets, connections) reaches it or the jobs it forks.
    return sandbox.warm() if (ns.job_exec or settings.job_exec) == "warm" else sandbox


def _start(settings: Settings, process: str) -> None:
    """What every long-running process does first: logging, hiding its environment, metrics."""
    log.configure(settings.log_format, settings.log_level)
    forbid_inspection()
    metrics.PROCESS_START.labels(process=process).set(time.time())


def cmd_api(ns: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.services import Services

    settings = Settings()
    _start(settings, "api")
    app = create_app(Services.build(settings, _instance(settings).redis))
    host, port = ns.host or settings.api_host, ns.port or settings.api_port
    log.get(process="api").info("api listening", url=f"http://{host}:{port}/api/docs")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0


def _instance(settings: Settings) -> Gristmill:
    """The stores of the configured instance, once its server answers (waiting for it)."""
    gm = Gristmill(settings=settings)
    if not has_credentials(gm.url, settings.redis_password()):
        log.get().warning(
            "redis without credentials: anything that can reach it, job code included, can "
            "read and change every job; give it a password (README: Security)", url=gm.url)
    backoff = Backoff()
    while True:
        try:
            check_version(gm.redis)
            return gm
        except RedisUnavailable as exc:
            if not backoff.failures:  # a container may start before its Redis: wait
                log.get().warning("waiting for redis", url=gm.url, error=str(exc))
            time.sleep(backoff.next_delay())


def cmd_worker(ns: argparse.Namespace) -> int:
    from vault.crypto import SecretBox
    from worker.worker import Worker

    settings = Settings()
    _start(settings, "worker")
    sandbox = sandbox_for(settings, ns)  # before any connection: a refusal says why, at once
    _run_init_script(settings, ns, sandbox)  # before any connection too: it claims nothing
    gm = _instance(settings)
    worker = Worker(
        store=gm.store, scripts=gm.scripts, fleet=gm.fleet, settings=settings, group=ns.group,
        concurrency=ns.concurrency, tokens=gm.identity, sandbox=sandbox,
        box=SecretBox.from_setting(settings.secret_key) if settings.secret_key else None,
        dedicated=_dedicated_pool(ns, sandbox),
    )
    metrics.serve(ns.metrics_port, settings.metrics_addr)
    _on_stop(worker.stop, worker.kill_running, ns.grace)
    worker.run()
    # A vital thread died: exit non-zero so the supervisor (up, Kubernetes) restarts us.
    return 1 if worker.failed else 0


def _dedicated_pool(ns: argparse.Namespace, sandbox: Any) -> Any:
    """The worker's dedicated processes, when it was given scripts or tags to dedicate."""
    from common.paths import check_item_path
    from worker.dedicated import DedicatedPool
    from worker.environment import process_environment

    if not ns.dedicated and not ns.dedicated_tag:
        return None
    for path in ns.dedicated:
        check_item_path(path)
    if ns.dedicated_threads < 1:
        raise ConfigError("--dedicated-threads must be at least 1")
    if ns.dedicated_processes < 0:
        raise ConfigError("--dedicated-processes must be at least 1 (0: the worker's concurrency)")
    return DedicatedPool(tuple(ns.dedicated), sandbox, process_environment(ns.group),
                         tags=tuple(ns.dedicated_tag), threads=ns.dedicated_threads,
                         processes=ns.dedicated_processes or max(1, ns.concurrency))


def _run_init_script(settings: Settings, ns: argparse.Namespace, sandbox: Any) -> None:
    """The worker's init script, if it has one (InitScriptFailed stops the worker)."""
    from worker.init_script import InitScript, run_init_script

    path = ns.init_script or settings.init_script_for(ns.group)
    if path:
        run_init_script(InitScript.load(path), sandbox=sandbox, group=ns.group,
                        timeout_s=settings.init_script_timeout_s,
                        log=log.get(process="worker", group=ns.group))


def cmd_scheduler(ns: argparse.Namespace) -> int:
    from scheduler.scheduler import Scheduler

    settings = Settings()
    _start(settings, "scheduler")
    gm = _instance(settings)
    scheduler = Scheduler(
        store=gm.store, admission=gm.admission, fleet=gm.fleet, lease_s=settings.worker_lease_s,
        heartbeat_s=settings.heartbeat_s, max_restarts=settings.max_restarts,
        flow_jobs=gm.flow_jobs,
        objects=gm.objects,
    )
    if ns.metrics_port:
        metrics.REGISTRY.register(metrics.FleetCollector(scheduler.snapshot))
        metrics.serve(ns.metrics_port, settings.metrics_addr)
    _on_stop(scheduler.stop, None, 0)
    scheduler.run()
    return 1 if scheduler.failed else 0


def _on_stop(stop: Any, kill: Any, grace_s: float) -> None:
    """SIGTERM/SIGINT: stop; after ``grace_s`` (or at a second signal) kill what still runs."""

    def on_signal(count: int) -> None:
        if count == 1:
            stop()
            if kill is not None:
                timer = threading.Timer(grace_s, kill)
                timer.daemon = True
                timer.start()
        elif count == 2 and kill is not None:
            kill()

    StopSignals(on_signal).install()


# -- up ------------------------------------------------------------------------------------


def bootstrap(settings: Settings, url: str, api_port: int, out: Output) -> dict[str, str]:
    """First run of `up`: a secret key and an admin token in the data dir. Returns env for children."""
    from auth.identity import IdentityStore
    from common.keys import Keys
    from vault.crypto import load_or_create_key

    data_dir = private_data_dir(settings)
    env = {}
    if not settings.secret_key:
        key_file = data_dir / "secret-key"
        env["GRISTMILL_SECRET_KEY"] = load_or_create_key(key_file)
        out.say(f"the key of secrets at rest is in {key_file.resolve()} (back it up: secrets "
                "cannot be read without it)", key_file=str(key_file.resolve()))
    if api_port and "GRISTMILL_BASE_URL" not in os.environ:
        env["GRISTMILL_BASE_URL"] = f"http://127.0.0.1:{api_port}"
    token_file = data_dir / "admin-token"
    client = connect(url, password=settings.redis_password())
    token = IdentityStore(client, Keys(settings.namespace)).ensure_admin()
    if token is not None:
        write_private(token_file, token + "\n")
    if token_file.exists():
        out.say(f"admin API token in {token_file.resolve()}", token_file=str(token_file.resolve()))
    else:
        out.say("the admin user exists; create a token with `gristmill token create --user admin`")
    return env


def private_data_dir(settings: Settings) -> Path:
    """The data dir, created if need be, readable by its owner alone."""
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    return data_dir


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner may read (mode 0600 from its creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


def _embedded_password(url_file: Path) -> str:
    """The embedded server's operator password: the one `up` chose before, else a new one."""
    with contextlib.suppress(OSError, ValueError):
        password = urlparse(url_file.read_text().strip()).password
        if password:
            return password
    return secrets.token_urlsafe(32)


def _without_password(url: str) -> str:
    parts = urlparse(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _up_sandbox_options(out: Output) -> list[str]:
    """`up` is a local, single-user fleet: where jobs cannot be isolated it runs them with its
    own rights rather than refusing to start, and says so plainly, once."""
    from worker.sandbox.policy import isolation_problem

    problem = isolation_problem()
    if problem is None:
        out.say("jobs run sandboxed: a uid of their own, their own PID/mount/IPC namespaces "
                "and private root, memory/process/file limits")
        return []
    out.say(f"WARNING: jobs are NOT isolated here ({problem}): job code runs with this "
            "fleet's own rights and can read everything it can, Redis password included. "
            "Run only code you trust, or run `up` as root on Linux.", level="warning")
    return ["--unsafe-shared-user"]


def cmd_up(ns: argparse.Namespace) -> int:
    from gristmill.embedded import EmbeddedRedis, port_in_use

    settings = Settings()
    _start(settings, "up")
    out = Output(as_json=json_mode(settings.log_format))
    if ns.api_port and port_in_use(ns.api_port):
        raise ConfigError(f"port {ns.api_port} is taken: pass --api-port (0: no API)")
    server = None
    url = settings.redis_url
    url_file = private_data_dir(settings) / REDIS_URL_FILE
    if url is None:
        server = EmbeddedRedis(Path(settings.data_dir) / "redis", port=ns.redis_port,
                               binary=settings.redis_server, appendfsync=ns.appendfsync,
                               password=_embedded_password(url_file))
        version = server.start()
        url = server.url
        write_private(url_file, url + "\n")
        out.say(f"embedded {version} on 127.0.0.1:{ns.redis_port}, credentials required "
                f"(data in {server.data_dir}); its URL, password included, is in "
                f"{url_file.resolve()}", url_file=str(url_file.resolve()))
    else:
        version = check_version(connect(url, password=settings.redis_password()))
        url_file.unlink(missing_ok=True)  # clients here must not find a stale embedded URL
        out.say(f"using {version} at {_without_password(url)}", url=_without_password(url))

    env = {**os.environ, "GRISTMILL_REDIS_URL": url, **bootstrap(settings, url, ns.api_port, out)}
    exe = [sys.executable, "-m", "gristmill"]
    metrics_port = ns.metrics_port
    children = [Child("scheduler", [*exe, "scheduler", "--metrics-port", str(metrics_port)], env)]
    if ns.api_port:
        children.append(Child("api", [*exe, "api", "--port", str(ns.api_port)], env))
    sandbox = _up_sandbox_options(out)
    for i in range(ns.workers):
        port = metrics_port + 1 + i if metrics_port else 0
        children.append(Child(
            f"worker-{i + 1}",
            [*exe, "worker", "--group", ns.group, "--concurrency", str(ns.concurrency),
             "--metrics-port", str(port), "--grace", str(ns.grace), *sandbox],
            env,
        ))
    stopping = threading.Event()
    StopSignals(lambda count: stopping.set()).install()
    for child in children:
        child.start()
    api = f", API on http://127.0.0.1:{ns.api_port}/api/docs" if ns.api_port else ""
    out.say(f"fleet up: 1 scheduler, {ns.workers} workers x {ns.concurrency} "
            f"(group {ns.group}){api}. Ctrl-C stops it.")
    if ns.api_port:
        token_file = (Path(settings.data_dir) / "admin-token").resolve()
        out.say(f"web UI on http://127.0.0.1:{ns.api_port}/ — sign in as admin with "
                f"the API token in {token_file} (or a user's password)")
    redis_down_since: float | None = None
    try:
        while not stopping.is_set():
            pump(children, out, 0.5)
            now = time.monotonic()
            if server is not None and server.exited():
                redis_down_since = _restart_server(server, out, now, redis_down_since)
                if redis_down_since is not None:
                    continue  # children wait for Redis (they retry); restart it first
            for child in children:
                child.check(now, out)
    finally:
        out.say(f"stopping (running jobs get {ns.grace:g} s to finish)", to_stderr=True)
        stop_all(children, out, ns.grace + 5)
        if server is not None:
            server.stop()
    return 0


def _restart_server(server: Any, out: Output, now: float, down_since: float | None) -> float | None:
    """The embedded Redis exited: start it again (its AOF keeps the data). None once it runs."""
    if down_since is None:
        out.say("embedded redis exited; restarting it", level="warning", to_stderr=True,
                code=server.process.returncode if server.process else None)
        down_since = now
        if server.process is not None and server.process.stderr is not None:
            server.process.stderr.close()
    try:
        server.start()
    except ConfigError as exc:
        out.say("embedded redis did not start; retrying", level="warning", to_stderr=True,
                error=str(exc))
        return down_since
    out.say("embedded redis restarted", down_s=round(now - down_since, 3))
    return None
