"""The cluster client on a real cluster: credentials as deployed, and a command across
slots failing loudly, never as a passing outage."""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot

from common.connection import connect, is_cluster, redis_errors
from common.errors import RedisUnavailable
from common.luascripts import LuaScript
from gristmill.embedded_cluster import EmbeddedCluster
from tests.conftest import RedisUnderTest

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(redis_server: RedisUnderTest) -> EmbeddedCluster:
    if not isinstance(redis_server, EmbeddedCluster):
        pytest.skip("about a cluster")
    return redis_server


def test_a_cross_slot_command_is_a_bug_not_an_outage(cluster: EmbeddedCluster,
                                                     redis_client: redis.Redis) -> None:
    """The client refuses keys of two slots; redis_errors lets the error through."""
    move = redis_errors(lambda: redis_client.lmove("gm:inbox", "gm:inbox:processing:s1"))
    with pytest.raises(redis.exceptions.RedisClusterException, match="same key slot"):
        move()


def test_a_script_reaching_outside_its_slot_is_refused(cluster: EmbeddedCluster,
                                                       redis_client: redis.Redis) -> None:
    """A flagged script touching an undeclared key of another slot is refused by the server,
    even when one shard serves both slots."""
    low, high = 0, 16384 // 3  # the first primary's slots (EmbeddedCluster)
    first, other = [k for k in (f"gm:{{wg:x{i}}}:ready" for i in range(1000))
                    if low <= key_slot(k.encode()) < high][:2]
    assert key_slot(first.encode()) != key_slot(other.encode())
    script = LuaScript("reach", "#!lua\nreturn redis.call('LLEN', ARGV[1])\n")
    reach = redis_errors(lambda: script(redis_client, [first], [other]))
    with pytest.raises(redis.exceptions.ResponseError, match="same slot") as refused:
        reach()
    assert not isinstance(refused.value, RedisUnavailable)


def test_the_password_file_gives_the_cluster_password(cluster: EmbeddedCluster) -> None:
    """As deployed: a cluster URL naming the user and nodes, the password from the file
    setting (``connect(password=...)``), which wins over one in the URL."""
    assert cluster.password is not None
    nodes = ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes)
    for url in (f"redis+cluster://gristmill@{nodes}", f"redis+cluster://gristmill:wrong@{nodes}"):
        client = connect(url, password=cluster.password)
        assert is_cluster(client)
        client.set("gm:settings", "x")
        assert client.get("gm:settings") == b"x"
        client.close()
