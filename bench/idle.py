"""Idle cost: which Redis commands an idle fleet issues, per second, read from INFO commandstats.

The claim under test: "an idle fleet issues no Redis commands other than
blocking calls and heartbeats". Commands are classed by name:

* ``blocking`` - BLMOVE, BLPOP, ... (a worker or promoter waiting; each call
  costs Redis nothing while it waits and is counted when it returns);
* ``heartbeat`` - the commands of the worker and scheduler heartbeat
  pipelines (ZADD, HSET, SADD, HGETALL, SMEMBERS, ZRANGE);
* ``sweep`` - EVALSHA, as long as it stays within what the promoters' safety
  sweep makes: each promoter at rest runs ``promote.lua`` once per
  ``scheduler.promoter.sweep_period_s`` (27 s under the default socket
  timeout) when nothing wakes it earlier, a bounded periodic call by design;
* ``other`` - anything else, and EVALSHA beyond the sweep's bound: a periodic
  non-blocking call, i.e. polling.

The claim holds when nothing is ``other``. Commands run inside Lua scripts are
counted by Redis under their own names as well as under EVALSHA, so a ZRANGE
issued by the promote script shows up in the heartbeat class.

``python -m bench.idle --seconds 20`` measures one scheduler process alone, on an
embedded Redis of its own, with two worker groups in use (issue 9: at most 2
commands/s per process at rest).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from common.keys import Keys
from scheduler.promoter import sweep_period_s

# client|id: a worker's Blocker asks its connection's id before each blocking call (so a
# stop can CLIENT UNBLOCK it): one per block, part of the blocking call's cost.
BLOCKING = frozenset({"blmove", "blpop", "brpop", "brpoplpush", "blmpop", "bzpopmin",
                      "bzpopmax", "bzmpop", "xread", "xreadgroup", "wait", "client|id"})
# lrange: the worker reads its own running list in its heartbeat pipeline (reconciliation).
HEARTBEAT = frozenset({"zadd", "hset", "sadd", "hgetall", "smembers", "zrange", "lrange"})
OWN_COMMANDS = {"info": 1}  # the benchmark's INFO before the window is counted in the window


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def classify(command: str) -> str:
    """``blocking``, ``heartbeat`` or ``other`` by name alone (see the module docstring);
    :func:`judge` then counts EVALSHA against the promoters' sweep."""
    if command in BLOCKING:
        return "blocking"
    if command in HEARTBEAT:
        return "heartbeat"
    return "other"


@dataclass(frozen=True)
class Sweep:
    """The promoters' safety sweep (``scheduler/promoter.py``): one EVALSHA of ``promote.lua``
    per promoter at least ``period_s`` apart, when nothing wakes it earlier. Each scheduler
    runs one promoter per group in use."""

    promoters: int
    period_s: float

    def most(self, seconds: float) -> int:
        """The most EVALSHAs the sweep makes in a window of ``seconds``: calls at least
        ``period_s`` apart fit ``floor(seconds / period_s) + 1`` times in it, i.e. the window
        in periods rounded up (one more only when it is an exact multiple)."""
        return self.promoters * (math.floor(seconds / self.period_s) + 1)

    def describe(self) -> str:
        plural = "" if self.promoters == 1 else "s"
        return (f"promoter sweep <= 1 per {self.period_s:g} s per promoter "
                f"({self.promoters} promoter{plural})")


def promoter_sweep(client: redis.Redis, keys: Keys, socket_timeout_s: float | None) -> Sweep:
    """The sweep of the schedulers registered now, whose connections have
    ``socket_timeout_s``: one promoter per scheduler and group in use."""
    pipe = client.pipeline(transaction=False)
    pipe.zcard(keys.schedulers)
    pipe.scard(keys.groups)
    schedulers, groups = pipe.execute()
    return Sweep(int(schedulers) * int(groups), sweep_period_s(socket_timeout_s))


@dataclass(frozen=True)
class Verdict:
    """The claim "only blocking calls and heartbeats" on one window's calls."""

    kinds: dict[str, str]  # command -> blocking, heartbeat, sweep or other
    sweep: Sweep
    seconds: float

    @property
    def others(self) -> list[str]:
        return sorted(c for c, kind in self.kinds.items() if kind == "other")

    @property
    def holds(self) -> bool:
        return not self.others

    def describe(self) -> str:
        """The verdict as printed, naming the allowance it made."""
        verdict = "holds" if self.holds else "does NOT hold"
        return (f"claim 'only blocking calls and heartbeats' {verdict} (allowed: "
                f"{self.sweep.describe()}, so at most {self.sweep.most(self.seconds)} EVALSHA "
                f"in {self.seconds:.1f} s)")


def judge(calls: Mapping[str, int], seconds: float, sweep: Sweep) -> Verdict:
    """The verdict on the calls per command (as INFO commandstats counts them) made in a
    window of ``seconds``: EVALSHA up to ``sweep.most(seconds)`` is the sweep, beyond it
    all of it is ``other``; every other command is classed by name."""
    kinds = {command: classify(command) for command, n in calls.items() if n > 0}
    if "evalsha" in kinds and calls["evalsha"] <= sweep.most(seconds):
        kinds["evalsha"] = "sweep"
    return Verdict(kinds, sweep, seconds)


@dataclass(frozen=True)
class CommandRate:
    command: str
    kind: str
    calls: int
    per_s: float


@dataclass(frozen=True)
class IdleCost:
    """Commands issued while the fleet was idle for ``seconds``, and the claim's verdict."""

    seconds: float
    rates: list[CommandRate]
    verdict: Verdict

    @property
    def total_per_s(self) -> float:
        return sum(r.per_s for r in self.rates)

    @property
    def others(self) -> list[CommandRate]:
        return [r for r in self.rates if r.kind == "other"]

    @property
    def claim_holds(self) -> bool:
        """True when every command seen is a blocking call, a heartbeat command or the sweep."""
        return self.verdict.holds

    def claim_line(self) -> str:
        others = ", ".join(f"{r.command} {r.per_s:.2f}/s" for r in self.others)
        return self.verdict.describe() + (f" (other: {others})" if others else "")

    def to_dict(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 3),
            "total_per_s": round(self.total_per_s, 3),
            "claim_holds": self.claim_holds,
            "allowed": self.verdict.sweep.describe(),
            "commands": [{"command": r.command, "kind": r.kind, "calls": r.calls,
                          "per_s": round(r.per_s, 3)} for r in self.rates],
        }


def measure_idle(client: redis.Redis, seconds: float, sweep: Sweep) -> IdleCost:
    """Snapshot commandstats, keep still for ``seconds``, snapshot again; rates per kind.

    The benchmark issues nothing in between, so every call counted came from
    the fleet (except the first INFO, subtracted). The window is timed from before
    the first snapshot to after the second: never shorter than what Redis counted.
    """
    started = time.monotonic()
    before = command_calls(client)
    time.sleep(seconds)  # the measurement window itself: the fleet is meant to be idle
    after = command_calls(client)
    elapsed = time.monotonic() - started
    calls = {command: n - before.get(command, 0) - OWN_COMMANDS.get(command, 0)
             for command, n in after.items()}
    verdict = judge(calls, elapsed, sweep)
    rates = [CommandRate(command, verdict.kinds[command], delta, delta / elapsed)
             for command, delta in calls.items() if delta > 0]
    rates.sort(key=lambda r: (r.kind, -r.calls, r.command))
    return IdleCost(elapsed, rates, verdict)


# The commands only the scheduler's flow duties send at rest (scheduler/flows.py), told apart
# in the report: the look's forward (LRANGE) and, when due, its timers and sweep (ZRANGE
# BYSCORE); the cancel reads of before (LPOP). Their BLMOVE, BLPOP and ZRANGE are counted
# with the inbox's, the promoters' and the beat's.
FLOW_COMMANDS = frozenset({"lrange", "zrangebyscore", "lpop"})


def measure_scheduler(seconds: float, groups: int = 2) -> IdleCost:
    """One ``gristmill scheduler`` process at rest on a Redis of its own, ``groups`` in use."""
    from common.settings import Settings
    from gristmill.client import Gristmill
    from gristmill.embedded import EmbeddedRedis, free_port

    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="gm-idle-")), port=free_port())
    server.start()
    process = None
    try:
        client = Gristmill(settings=Settings(redis_url=server.url))
        client.deploy_script("u/bench/idle", "def main():\n    return 1\n", "python3")
        for i in range(groups):
            client.run_script("u/bench/idle", tag=f"idle{i}")
        env = {**os.environ, "GRISTMILL_REDIS_URL": server.url}
        process = subprocess.Popen([sys.executable, "-m", "gristmill", "scheduler"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        settled = threading.Event()
        deadline = time.monotonic() + 30
        # Registered, and past its start-up (first tick, promoters and advancers started).
        while not client.redis.zcard(client.keys.schedulers) and time.monotonic() < deadline:
            settled.wait(0.05)
        settled.wait(3.0)
        # The scheduler reads its settings from the same environment as the client's.
        sweep = promoter_sweep(client.redis, client.keys, client.settings.redis_socket_timeout_s)
        return measure_idle(client.redis, seconds, sweep)
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--groups", type=int, default=2)
    ns = parser.parse_args(argv)
    cost = measure_scheduler(ns.seconds, ns.groups)
    from scheduler.inbox import BLOCK_S

    # BLMOVE: the flow advancers' and the inbox's (one per BLOCK_S); the latter taken out.
    flows = sum(r.per_s if r.command in FLOW_COMMANDS else max(0.0, r.per_s - 1 / BLOCK_S)
                for r in cost.rates if r.command in FLOW_COMMANDS | {"blmove"})
    print(f"one scheduler at rest, {ns.groups} groups, {cost.seconds:.1f} s: "
          f"{cost.total_per_s:.2f} commands/s in all")
    for r in cost.rates:
        print(f"  {r.command:16} {r.kind:9} {r.calls:6} calls {r.per_s:6.2f}/s")
    print(f"of which the flow duties (scheduler/flows.py) about {flows:.2f}/s, the rest "
          f"{cost.total_per_s - flows:.2f}/s")
    print(cost.claim_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
