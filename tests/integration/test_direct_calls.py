"""A worker's per-job script calls on connections of their own (``luascripts.DirectCalls``):
the answers a client's call gives, NOSCRIPT survived, an error reply or a lost connection
never leaves a later call reading an earlier call's reply."""

from __future__ import annotations

import pytest
import redis

from common import luascripts
from common.errors import RedisUnavailable
from common.keys import Keys
from common.models import Status
from common.store import Store
from tests.integration.helpers import make_job

pytestmark = pytest.mark.timeout(30)

ECHO = luascripts.LuaScript("test_echo", """
if ARGV[1] == 'bad' then
  return redis.error_reply('ERR bad argument')
end
redis.call('RPUSH', KEYS[1], ARGV[1])
return ARGV[1]
""")


def test_a_direct_call_answers_as_the_client_does(redis_client: redis.Redis) -> None:
    direct = luascripts.DirectCalls(redis_client)
    assert direct(ECHO, ["k"], ["a"]) == b"a"
    assert ECHO(redis_client, ["k"], ["b"]) == b"b"
    assert direct(ECHO, ["k"], [7]) == b"7"
    assert direct.many(ECHO, [(["k"], ["x"]), (["k"], ["y"])]) == [b"x", b"y"]
    assert redis_client.lrange("k", 0, -1) == [b"a", b"b", b"7", b"x", b"y"]
    direct.close()


def test_noscript_loads_the_script_and_repeats_the_call_once(redis_client: redis.Redis) -> None:
    direct = luascripts.DirectCalls(redis_client)
    assert direct(ECHO, ["k"], ["a"]) == b"a"
    redis_client.script_flush()
    assert direct.many(ECHO, [(["k"], ["b"]), (["k"], ["c"])]) == [b"b", b"c"]
    assert redis_client.lrange("k", 0, -1) == [b"a", b"b", b"c"]  # each written once
    direct.close()


OTHER = luascripts.LuaScript("test_other", """
redis.call('RPUSH', KEYS[1], 'other:' .. ARGV[1])
return 1
""")


def test_of_several_scripts_only_a_noscript_call_is_repeated(redis_client: redis.Redis) -> None:
    """One write with two scripts, only one of them cached: the cached one ran once, the
    other is loaded and sent again alone (neither runs twice)."""
    direct = luascripts.DirectCalls(redis_client)
    redis_client.script_flush()
    redis_client.script_load(ECHO.source)
    assert direct.calls([(OTHER, ["k"], ["a"]), (ECHO, ["k"], ["b"])]) == [1, b"b"]
    assert redis_client.lrange("k", 0, -1) == [b"b", b"other:a"]
    direct.close()


def test_an_error_reply_is_raised_and_the_next_call_reads_its_own_reply(
        redis_client: redis.Redis) -> None:
    direct = luascripts.DirectCalls(redis_client)
    with pytest.raises(redis.exceptions.ResponseError, match="bad argument"):
        direct.many(ECHO, [(["k"], ["a"]), (["k"], ["bad"]), (["k"], ["c"])])
    assert redis_client.lrange("k", 0, -1) == [b"a", b"c"]  # the others ran
    assert direct(ECHO, ["k"], ["d"]) == b"d"
    direct.close()


def test_a_lost_connection_is_redis_unavailable_then_a_new_one_is_made(
        redis_client: redis.Redis, keys: Keys) -> None:
    if isinstance(redis_client, redis.RedisCluster):
        pytest.skip("a cluster keeps redis-py's own calls")
    store = Store(redis_client, keys)
    store.use_direct_calls()
    job = make_job()
    store.enqueue(job, fresh_id=True)
    (started,) = store.claim_start(job.group, "w1", 1, "c")
    assert store.append_logs(started, [(1, "stdout", "one")]) == 1
    redis_client.client_kill_filter(_type="normal", skipme=True)  # the direct connection too
    with pytest.raises(RedisUnavailable):
        store.append_logs(started, [(2, "stdout", "two")])
    assert store.append_logs(started, [(3, "stdout", "three")]) == 1
    assert store.complete(started, Status.SUCCESS, {"result": 1}, retention_s=60) == 1
    assert store.complete(started, Status.SUCCESS, {"result": 1}, retention_s=60) == 2
    assert store.get_job(job.id).status == Status.SUCCESS
    assert [e.line for e in store.logs(job.id)] == ["one", "three"]
    store.close_direct_calls()
