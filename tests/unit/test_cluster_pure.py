"""Cluster support without a cluster: URLs, error classes, slots of the key layout, script flags."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from common.connection import DEFAULT_PORT, cluster_nodes, connect, is_cluster_url, passing_state
from common.errors import ConfigError
from common.keys import Keys
from common.settings import Settings


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


@pytest.mark.parametrize(("url", "nodes"), [
    ("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001", [("10.0.0.1", 7000), ("10.0.0.2", 7001)]),
    ("redis+cluster://redis-0", [("redis-0", DEFAULT_PORT)]),
    ("rediss+cluster://:p@[::1]:7000,h:1", [("::1", 7000), ("h", 1)]),
    ("redis+cluster://a:1,,b:2/0", [("a", 1), ("b", 2)]),
])
def test_cluster_urls_name_their_nodes(url: str, nodes: list[tuple[str, int]]) -> None:
    """A cluster URL names one or more nodes; the port defaults to DEFAULT_PORT."""
    assert is_cluster_url(url)
    assert cluster_nodes(url) == nodes


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+cluster://h:port"])
def test_bad_cluster_urls_say_what_is_wrong(url: str) -> None:
    """A URL without a usable node is a ConfigError naming the expected form."""
    with pytest.raises(ConfigError, match=r"host:port|names no node"):
        cluster_nodes(url)


def test_a_cluster_url_with_a_database_is_refused() -> None:
    """A cluster has database 0 only: another one is a ConfigError before any connection."""
    with pytest.raises(ConfigError, match="only database 0"):
        connect("redis+cluster://u:p@127.0.0.1:1/2")


def test_single_server_urls_are_not_cluster_urls() -> None:
    """redis:// and rediss:// stay single-server URLs."""
    assert not is_cluster_url("redis://u:p@h:7379/0")
    assert not is_cluster_url("rediss://h:6380/0")


@pytest.mark.parametrize(("exc", "passes"), [
    (redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"), True),
    (redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"), True),
    (redis.exceptions.SlotNotCoveredError("Slot 42 is not covered by the cluster."), True),
    (redis.exceptions.RedisClusterException("Redis Cluster cannot be connected. Please provide"),
     True),
    (redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."), True),
    (redis.exceptions.TryAgainError("TRYAGAIN"), True),
    # Our bugs stay bugs, so that nothing swallows them (a test on a cluster fails on them).
    (redis.exceptions.RedisClusterException("BLMOVE - all keys must map to the same key slot"),
     False),
    (redis.exceptions.ResponseError("CROSSSLOT Keys in request don't hash to the same slot"), False),
    (redis.exceptions.ResponseError(
        "Script attempted to access keys that do not hash to the same slot"), False),
    (redis.exceptions.CrossSlotTransactionError("all keys must be in the same slot"), False),
])
def test_a_cluster_in_failover_passes_a_cross_slot_command_does_not(exc: Exception,
                                                                    passes: bool) -> None:
    """Failover states are outages to wait out; a cross-slot command is a bug."""
    assert passing_state(exc) is passes


def test_every_group_key_is_in_the_group_slot() -> None:
    """Every key of a group, whatever its id arguments, hashes to the slot of {wg:G}."""
    g = Keys("gm").group("gpu")
    expected = slot("{wg:gpu}")
    keys = [g.scheduled, g.ready, g.completed, g.events, g.wake, g.flow_queue, g.flows_running,
            g.flow_timers, g.flow_notify, g.ixtrim, g.running("w{1}"), g.job("a}b"), g.logs("j"),
            g.done("j"), g.attempts("j"), g.control("w"), g.redact("j"), g.flow("f"),
            g.flow_events("f"), g.flow_outbox("f"), g.flow_processing("a"), g.index("status:queued")]
    assert {slot(k) for k in keys} == {expected}


def test_the_inbox_and_its_processing_lists_share_a_slot() -> None:
    """BLMOVE gm:inbox -> processing and the move back stay on one shard, any namespace."""
    for namespace in ("gm", "prod", "team:a"):
        k = Keys(namespace)
        assert slot(k.inbox_processing("sched-1")) == slot(k.inbox), namespace
    assert Keys("gm").inbox == "gm:inbox"  # the public name, unchanged


def test_the_shared_stores_have_one_slot_each() -> None:
    """Scripts, flows, identity, items and schedules: one tag each (their transactions)."""
    k = Keys("gm")
    groups = [
        [k.script("h"), k.script_paths, k.script_history("u/a/x"), k.script_locked,
         k.lock_cache("d")],
        [k.flow_version("h"), k.flow_paths, k.flow_history("f/x")],
        [k.user("a"), k.users, k.user_group("g"), k.user_groups, k.members("g"),
         k.memberships("a"), k.token("s"), k.user_tokens("a"), k.job_token("j"),
         k.job_token_key],
        [k.variable("u/a/v"), k.resource("u/a/r"), k.item_index("variable"), k.acl("u/a/v"),
         k.folder("f"), k.granted("u/a")],
        [k.schedule("u/a/s"), k.schedule_paths, k.schedules_due, k.schedule_runs("u/a/s")],
    ]
    for keys in groups:
        assert len({slot(key) for key in keys}) == 1, keys


def test_a_namespace_with_braces_is_refused() -> None:
    """Braces in the namespace would move keys to other slots: the setting refuses them."""
    with pytest.raises(ValueError, match="namespace"):
        Settings(namespace="a{b}")


def _scripts() -> list[tuple[str, str]]:
    """Every Lua script of every package (``<package>/lua/*.lua``); not the snippets
    (``_*.lua``), which are text put inside scripts (common/luascripts.py)."""
    root = Path(__file__).resolve().parents[2]
    found = [(str(path.relative_to(root)), path.read_text())
             for path in sorted(root.glob("*/lua/*.lua")) if not path.name.startswith("_")]
    assert len(found) >= 12
    return found


@pytest.mark.parametrize(("name", "source"), _scripts(), ids=lambda v: v if "/" in v else "")
def test_every_script_declares_flags(name: str, source: str) -> None:
    """``#!lua`` first: a cluster then refuses any key outside the slot of KEYS, even one
    that the same shard serves (without flags, Redis allows that)."""
    assert source.startswith("#!lua\n"), name
