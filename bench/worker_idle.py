"""One idle worker alone: the Redis commands it issues per second (INFO commandstats).

``python -m bench.worker_idle [--seconds 60] [--concurrency 4]`` starts a private
Redis and one ``gristmill worker`` (no scheduler, nothing to run), waits until it
has registered and settled, and counts every command the server ran during the
window, by name (commands inside scripts included). Issue 9's target is at most
2 per second per process. A blocking call is counted when it returns, so the
window should be a few times longer than the worker's block (27 s by default).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.idle import command_calls
from gristmill.embedded import EmbeddedRedis, free_port

SETTLE_S = 3.0  # past the worker's start (its first beats, its init)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.worker_idle", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="the window (default 60)")
    p.add_argument("--concurrency", type=int, default=4, help="the worker's slots (default 4)")
    ns = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gm-worker-idle-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", port=free_port())
        server.start()
        env = {**os.environ, "GRISTMILL_REDIS_URL": server.url}
        worker = subprocess.Popen(
            [sys.executable, "-m", "gristmill", "worker", "--concurrency", str(ns.concurrency)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(server.url, socket_timeout=None)
        try:
            deadline = time.monotonic() + 60
            while not client.zcard("gm:workers"):
                if time.monotonic() > deadline or worker.poll() is not None:
                    print("the worker did not register", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            time.sleep(SETTLE_S)
            before, started = command_calls(client), time.monotonic()
            time.sleep(ns.seconds)  # the idle window is what is measured
            after, elapsed = command_calls(client), time.monotonic() - started
        finally:
            worker.terminate()
            worker.wait(30)
            client.close()
            server.stop()
    calls = {name: after[name] - before.get(name, 0) for name in after}
    calls["info"] -= 1  # our own INFO that opened the window
    counted = {name: n for name, n in calls.items() if n > 0}
    print(f"one idle worker (concurrency {ns.concurrency}), {elapsed:.0f} s: "
          f"{sum(counted.values()) / elapsed:.2f} commands/s")
    for name, n in sorted(counted.items(), key=lambda item: -item[1]):
        print(f"  {name:14s} {n:5d} calls  {n / elapsed:.2f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
