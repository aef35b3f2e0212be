"""Idle cost: which Redis commands an idle fleet issues, per second, read from INFO commandstats.

The claim under test: "an idle fleet issues no Redis commands other than
blocking calls and heartbeats". Commands are classed by name:

* ``blocking`` - BLMOVE, BLPOP, ... (a worker or promoter waiting; each call
  costs Redis nothing while it waits and is counted when it returns);
* ``heartbeat`` - the commands of the worker and scheduler heartbeat
  pipelines (ZADD, HSET, SADD, HGETALL, SMEMBERS, ZRANGE);
* ``other`` - anything else: a periodic non-blocking call, i.e. polling.

Commands run inside Lua scripts are counted by Redis under their own names as
well as under EVALSHA, so a ZRANGE issued by the promote script shows up in
the heartbeat class; the EVALSHA that ran it is reported as ``other``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

BLOCKING = frozenset({"blmove", "blpop", "brpop", "brpoplpush", "blmpop", "bzpopmin",
                      "bzpopmax", "bzmpop", "xread", "xreadgroup", "wait"})
# lrange: the worker reads its own running list in its heartbeat pipeline (reconciliation).
HEARTBEAT = frozenset({"zadd", "hset", "sadd", "hgetall", "smembers", "zrange", "lrange"})
OWN_COMMANDS = {"info": 1}  # the benchmark's INFO before the window is counted in the window


def command_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def classify(command: str) -> str:
    """``blocking``, ``heartbeat`` or ``other`` (see the module docstring)."""
    if command in BLOCKING:
        return "blocking"
    if command in HEARTBEAT:
        return "heartbeat"
    return "other"


@dataclass(frozen=True)
class CommandRate:
    command: str
    kind: str
    calls: int
    per_s: float


@dataclass(frozen=True)
class IdleCost:
    """Commands issued while the fleet was idle for ``seconds``."""

    seconds: float
    rates: list[CommandRate]

    @property
    def total_per_s(self) -> float:
        return sum(r.per_s for r in self.rates)

    @property
    def others(self) -> list[CommandRate]:
        return [r for r in self.rates if r.kind == "other"]

    @property
    def claim_holds(self) -> bool:
        """True when every command seen is a blocking call or a heartbeat command."""
        return not self.others

    def to_dict(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 3),
            "total_per_s": round(self.total_per_s, 3),
            "claim_holds": self.claim_holds,
            "commands": [{"command": r.command, "kind": r.kind, "calls": r.calls,
                          "per_s": round(r.per_s, 3)} for r in self.rates],
        }


def measure_idle(client: redis.Redis, seconds: float) -> IdleCost:
    """Snapshot commandstats, keep still for ``seconds``, snapshot again; rates per kind.

    The benchmark issues nothing in between, so every call counted came from
    the fleet (except the first INFO, subtracted).
    """
    before = command_calls(client)
    started = time.monotonic()
    time.sleep(seconds)  # the measurement window itself: the fleet is meant to be idle
    after = command_calls(client)
    elapsed = time.monotonic() - started
    rates = []
    for command, calls in after.items():
        delta = calls - before.get(command, 0) - OWN_COMMANDS.get(command, 0)
        if delta > 0:
            rates.append(CommandRate(command, classify(command), delta, delta / elapsed))
    rates.sort(key=lambda r: (r.kind, -r.calls, r.command))
    return IdleCost(elapsed, rates)
