"""bench/idle.py's verdict on the claim "only blocking calls and heartbeats", from tables of
one window's calls per command (as INFO commandstats counts them), without Redis."""

from __future__ import annotations

import fakeredis
import pytest

from bench.idle import Sweep, judge, promoter_sweep
from common.keys import Keys
from scheduler.promoter import IDLE_BLOCK_S, sweep_period_s

pytestmark = pytest.mark.timeout(10)

ONE = Sweep(promoters=1, period_s=27.0)
TWO = Sweep(promoters=2, period_s=27.0)
NONE = Sweep(promoters=0, period_s=27.0)
AT_REST = {"blmove": 3, "client|id": 3, "blpop": 1, "zadd": 4, "hset": 2, "zrange": 2}


@pytest.mark.parametrize(("calls", "seconds", "sweep", "others"), [
    (AT_REST, 20.0, ONE, []),                                   # blocking and heartbeats only
    ({**AT_REST, "evalsha": 1}, 20.0, ONE, []),                 # one sweep in a window < period
    ({**AT_REST, "evalsha": 2}, 20.0, ONE, ["evalsha"]),        # two: more than the sweep makes
    ({"evalsha": 2}, 30.0, ONE, []),                            # 30 s can hold two sweeps 27 s apart
    ({"evalsha": 3}, 30.0, ONE, ["evalsha"]),
    ({"evalsha": 3}, 54.0, ONE, []),                            # an exact multiple: one more fits
    ({"evalsha": 3}, 53.9, ONE, ["evalsha"]),
    ({"evalsha": 2}, 20.0, TWO, []),                            # one sweep per promoter
    ({"evalsha": 3}, 20.0, TWO, ["evalsha"]),
    ({"evalsha": 1}, 20.0, NONE, ["evalsha"]),                  # no promoter: any EVALSHA is polling
    ({**AT_REST, "get": 1, "evalsha": 1}, 20.0, ONE, ["get"]),  # polling is named, the sweep not
    ({"get": 0, "evalsha": 0, "blmove": 1}, 20.0, NONE, []),    # commands not called in the window
])
def test_evalsha_is_allowed_up_to_the_promoters_sweep(
    calls: dict[str, int], seconds: float, sweep: Sweep, others: list[str],
) -> None:
    """The claim holds when nothing is ``other``; EVALSHA is the sweep up to its bound."""
    verdict = judge(calls, seconds, sweep)
    assert verdict.others == others
    assert verdict.holds == (not others)
    if calls.get("evalsha"):
        assert verdict.kinds["evalsha"] == ("other" if "evalsha" in others else "sweep")


def test_the_printed_verdict_names_the_allowance() -> None:
    """The line says which periodic call was allowed, and how many in the window."""
    held = judge({"evalsha": 1}, 20.0, ONE).describe()
    assert held.startswith("claim 'only blocking calls and heartbeats' holds")
    assert "promoter sweep <= 1 per 27 s per promoter (1 promoter)" in held
    assert "at most 1 EVALSHA in 20.0 s" in held
    broken = judge({"evalsha": 5}, 20.0, TWO).describe()
    assert "does NOT hold" in broken and "(2 promoters)" in broken


@pytest.mark.parametrize(("socket_timeout_s", "period_s"), [
    (30.0, 27.0),          # the default: the ~27 s seen under MONITOR
    (5.0, 4.5),
    (120.0, IDLE_BLOCK_S),  # the promoter's own longest wait
    (None, IDLE_BLOCK_S),   # no socket timeout
])
def test_the_sweep_period_is_the_promoters_idle_wait(
    socket_timeout_s: float | None, period_s: float,
) -> None:
    """IDLE_BLOCK_S, cut to the longest block the scheduler's socket timeout allows."""
    assert sweep_period_s(socket_timeout_s) == period_s


def test_the_sweep_counts_a_promoter_per_scheduler_and_group() -> None:
    """Two schedulers registered, two groups in use: four promoters (fakeredis: plain reads)."""
    client, keys = fakeredis.FakeRedis(), Keys("gm")
    client.zadd(keys.schedulers, {"s1": 1, "s2": 1})
    client.sadd(keys.groups, "default", "gpu")
    assert promoter_sweep(client, keys, 30.0) == Sweep(promoters=4, period_s=27.0)
