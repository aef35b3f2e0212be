"""The long-running processes: `gristmill worker`, `scheduler` and `up` (a whole fleet)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from common import log, metrics
from common.connection import check_version, connect
from common.errors import ConfigError, RedisUnavailable
from common.hardening import forbid_inspection
from common.retry import Backoff
from common.settings import EMBEDDED_REDIS_PORT, Settings
from gristmill.client import Gristmill

RESTART_BACKOFF_S = (0.5, 1, 2, 5, 10)


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
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("scheduler", help="run one scheduler process (several may run)")
    p.add_argument("--metrics-port", type=int, default=0, help="serve /metrics here (0: off)")
    p.set_defaults(func=cmd_scheduler)


def _start(settings: Settings) -> None:
    """What every long-running process does first: logging, and hiding its environment."""
    log.configure(settings.log_format, settings.log_level)
    forbid_inspection()


def cmd_api(ns: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.services import Services

    settings = Settings()
    _start(settings)
    app = create_app(Services.build(_instance(settings)))
    host, port = ns.host or settings.api_host, ns.port or settings.api_port
    log.get(process="api").info("api listening", url=f"http://{host}:{port}/api/docs")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0


def _instance(settings: Settings) -> Gristmill:
    """The stores of the configured instance, once its server answers (waiting for it)."""
    gm = Gristmill(settings=settings)
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
    from common.crypto import SecretBox
    from worker.worker import Worker

    settings = Settings()
    _start(settings)
    gm = _instance(settings)
    worker = Worker(
        store=gm.store, scripts=gm.scripts, fleet=gm.fleet, settings=settings, group=ns.group,
        concurrency=ns.concurrency, tokens=gm.identity,
        box=SecretBox.from_setting(settings.secret_key) if settings.secret_key else None,
    )
    metrics.serve(ns.metrics_port, settings.metrics_addr)
    _on_stop(worker.stop, worker.kill_running, ns.grace)
    worker.run()
    return 0


def cmd_scheduler(ns: argparse.Namespace) -> int:
    from scheduler.scheduler import Scheduler

    settings = Settings()
    _start(settings)
    gm = _instance(settings)
    scheduler = Scheduler(
        store=gm.store, admission=gm.admission, fleet=gm.fleet, lease_s=settings.worker_lease_s,
        heartbeat_s=settings.heartbeat_s, max_restarts=settings.max_restarts,
    )
    if ns.metrics_port:
        metrics.REGISTRY.register(metrics.FleetCollector(scheduler.snapshot))
        metrics.serve(ns.metrics_port, settings.metrics_addr)
    _on_stop(scheduler.stop, None, 0)
    scheduler.run()
    return 0


def _on_stop(stop: Any, kill: Any, grace_s: float) -> None:
    """SIGTERM/SIGINT: stop; after ``grace_s`` (or a second signal) kill what still runs."""
    signals_seen = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal signals_seen
        signals_seen += 1
        stop()
        if kill is None:
            return
        if signals_seen > 1:
            kill()
        else:
            timer = threading.Timer(grace_s, kill)
            timer.daemon = True
            timer.start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- up ------------------------------------------------------------------------------------


class Child:
    """A supervised child process, restarted with backoff when it dies unexpectedly."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.next_start = 0.0

    def start(self) -> None:
        # Own session: a Ctrl-C at the terminal reaches `up` only, which then stops
        # each child once, gracefully.
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def check(self, now: float, log_: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        if self.process is not None:
            delay = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
            log_.warning("process exited; restarting", process=self.name,
                         code=self.process.returncode, in_s=delay)
            self.process, self.next_start = None, now + delay
            self.restarts += 1
        if now >= self.next_start:
            self.start()

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def bootstrap(settings: Settings, url: str, api_port: int) -> dict[str, str]:
    """First run of `up`: a secret key and an admin token in the data dir. Returns env for children."""
    from common.crypto import load_or_create_key
    from common.identity import IdentityStore
    from common.keys import Keys

    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {}
    if not settings.secret_key:
        env["GRISTMILL_SECRET_KEY"] = load_or_create_key(data_dir / "secret-key")
    if api_port and "GRISTMILL_BASE_URL" not in os.environ:
        env["GRISTMILL_BASE_URL"] = f"http://127.0.0.1:{api_port}"
    token_file = data_dir / "admin-token"
    token = IdentityStore(connect(url), Keys(settings.namespace)).ensure_admin()
    if token is not None:
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n")
    if token_file.exists():
        print(f"gristmill: admin API token in {token_file.resolve()}", flush=True)
    else:
        print("gristmill: the admin user exists; create a token with "
              "`gristmill token create --user admin`", flush=True)
    return env


def cmd_up(ns: argparse.Namespace) -> int:
    from gristmill.embedded import EmbeddedRedis, port_in_use

    settings = Settings()
    _start(settings)
    up_log = log.get(process="up")
    if ns.api_port and port_in_use(ns.api_port):
        raise ConfigError(f"port {ns.api_port} is taken: pass --api-port (0: no API)")
    server = None
    url = settings.redis_url
    if url is None:
        server = EmbeddedRedis(Path(settings.data_dir) / "redis", port=ns.redis_port,
                               binary=settings.redis_server, appendfsync=ns.appendfsync)
        version = server.start()
        url = server.url
        print(f"gristmill: embedded {version} at {url} (data in {server.data_dir})", flush=True)
    else:
        version = check_version(connect(url))
        print(f"gristmill: using {version} at {url}", flush=True)

    env = {**os.environ, "GRISTMILL_REDIS_URL": url, **bootstrap(settings, url, ns.api_port)}
    exe = [sys.executable, "-m", "gristmill"]
    metrics_port = ns.metrics_port
    children = [Child("scheduler", [*exe, "scheduler", "--metrics-port", str(metrics_port)], env)]
    if ns.api_port:
        children.append(Child("api", [*exe, "api", "--port", str(ns.api_port)], env))
    for i in range(ns.workers):
        port = metrics_port + 1 + i if metrics_port else 0
        children.append(Child(
            f"worker-{i + 1}",
            [*exe, "worker", "--group", ns.group, "--concurrency", str(ns.concurrency),
             "--metrics-port", str(port), "--grace", str(ns.grace)],
            env,
        ))
    stopping = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    for child in children:
        child.start()
    api = f", API on http://127.0.0.1:{ns.api_port}/api/docs" if ns.api_port else ""
    print(f"gristmill: fleet up: 1 scheduler, {ns.workers} workers x {ns.concurrency} "
          f"(group {ns.group}){api}. Ctrl-C stops it.", flush=True)
    if ns.api_port:
        token_file = (Path(settings.data_dir) / "admin-token").resolve()
        print(f"gristmill: web UI on http://127.0.0.1:{ns.api_port}/ — sign in as admin with "
              f"the API token in {token_file} (or a user's password)", flush=True)
    try:
        while not stopping.wait(0.5):
            now = time.monotonic()
            for child in children:
                child.check(now, up_log)
    finally:
        print("gristmill: stopping (running jobs get "
              f"{ns.grace:g} s to finish)", file=sys.stderr, flush=True)
        for child in children:
            child.terminate()
        deadline = time.monotonic() + ns.grace + 5
        for child in children:
            child.wait(deadline)
        if server is not None:
            server.stop()
    return 0
