"""Producers in bulk: `enqueue_many`, the script header cache, the inbox in batches."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import redis

from common.clock import now_ms
from common.connection import is_cluster
from common.keys import Keys
from common.models import Kind, Status
from common.settings import Settings
from common.store import Store
from gristmill.client import Gristmill
from gristmill.embedded import EmbeddedRedis
from jobs import scripts as scripts_module
from jobs.admission import INBOX
from jobs.scripts import ScriptStore
from scheduler.inbox import BATCH, InboxAdmitter

pytestmark = [pytest.mark.timeout(60), pytest.mark.cluster]

HELLO = "def main(name: str):\n    return name\n"


@pytest.fixture
def client(redis_client: redis.Redis, redis_server: EmbeddedRedis) -> Gristmill:
    gm = Gristmill(settings=Settings(redis_url=redis_server.url))
    gm.deploy_script("u/alice/hello", HELLO, "python3")
    return gm


def admit_all(client: Gristmill) -> None:
    """Admit what waits in the inbox, as a scheduler's inbox thread does."""
    admitter = InboxAdmitter(client.store, client.admission, "test", threading.Event())
    while admitter.admit_next(0.01):
        pass


def command_calls(client: redis.Redis, name: str) -> int:
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


def test_enqueue_many_queues_like_submit(client: Gristmill, redis_client: redis.Redis) -> None:
    """2,500 specs in batches of 1,000: each record equals what submit writes for the same spec."""
    version = client.get_script("u/alice/hello")
    specs = [{"path": "u/alice/hello", "args": {"name": f"n{i}"}} for i in range(2500)]
    specs[7] = {"hash": version.hash, "args": {"name": "by hash"}}
    specs[8] = {"code": "def main():\n    return 1\n", "language": "python3"}
    before = now_ms()
    outcome = client.enqueue_many(specs, batch_size=1000)
    pushed = now_ms()
    assert len(outcome.ids) == 2500 and len(set(outcome.ids)) == 2500
    assert (outcome.rejected, outcome.duplicates) == ({}, [])
    assert redis_client.llen("gm:inbox") == 3  # one element per batch
    # Admitted later than pushed: created_at is the producer's push, and so is the due time
    # (DESIGN §1: scheduled_for defaults to the creation), so start lateness counts the inbox.
    while now_ms() <= pushed:  # the next millisecond, so the two times can differ
        time.sleep(0.001)
    admit_all(client)
    last = client.get_job(outcome.ids[-1])
    assert before <= last.created_at <= pushed and last.scheduled_for == last.created_at
    ready = [raw.decode() for raw in redis_client.lrange("gm:{wg:default}:ready", 0, -1)]
    assert ready == outcome.ids  # in spec order
    one = client.submit({"path": "u/alice/hello", "args": {"name": "n0"}})
    reference = client.get_job(one)
    first = client.get_job(outcome.ids[0])
    ignored = {"id", "created_at", "scheduled_for", "ix"}
    assert first.model_dump(exclude=ignored) == reference.model_dump(exclude=ignored)
    assert client.get_job(outcome.ids[7]).script_hash == version.hash
    assert client.get_job(outcome.ids[8]).kind == Kind.PREVIEW
    assert redis_client.get(f"gm:jobloc:{outcome.ids[2499]}") == b"default"
    # The listing indexes are written by the same script as submit's.
    assert redis_client.zcard("gm:{wg:default}:ix:status:queued") == 2501


def test_enqueue_by_path_reads_no_code(client: Gristmill, redis_client: redis.Redis) -> None:
    """A run by path or hash reads the version's header once, never its code (no HGETALL)."""
    if is_cluster(redis_client):
        pytest.skip("counts the commands of one server")
    version = client.get_script("u/alice/hello")
    client.admission.route("python3")  # the routing table (an HGETALL) is read, and cached
    before = command_calls(redis_client, "hgetall"), command_calls(redis_client, "hmget")
    client.enqueue_many([{"path": "u/alice/hello", "args": {"name": "x"}}] * 300
                        + [{"hash": version.hash, "args": {"name": "y"}}] * 300)
    client.run_script("u/alice/hello", {"name": "z"})
    after = command_calls(redis_client, "hgetall"), command_calls(redis_client, "hmget")
    assert after[0] == before[0]
    assert after[1] - before[1] == 1  # one header read, cached by hash afterwards


def test_path_cache_follows_deploys(
    client: Gristmill, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deploy by this process is run by path at once; another process's after the TTL."""
    first = client.get_job(client.run_script("u/alice/hello", {"name": "a"})).script_hash
    second, _ = client.deploy_script("u/alice/hello", HELLO + "# v2\n", "python3")
    assert client.get_job(client.run_script("u/alice/hello", {"name": "a"})).script_hash == \
        second.hash != first
    other = Gristmill(settings=Settings(redis_url=redis_server.url))
    third, _ = other.deploy_script("u/alice/hello", HELLO + "# v3\n", "python3")
    monkeypatch.setattr(scripts_module, "PATH_CACHE_S", 0.0)  # the TTL has passed
    assert client.get_job(client.run_script("u/alice/hello", {"name": "a"})).script_hash == \
        third.hash


def test_bad_specs_are_recorded_and_the_rest_queued(
    client: Gristmill, redis_client: redis.Redis
) -> None:
    """A batch with bad specs: each bad one is a failed record saying why; the others run."""
    taken = str(uuid.uuid4())
    client.submit({"id": taken, "path": "u/alice/hello", "args": {"name": "first"}})
    twice = str(uuid.uuid4())
    outcome = client.enqueue_many([
        {"path": "u/alice/hello", "args": {"name": "ok"}},
        {"path": "u/nobody/missing"},
        {"path": "u/alice/hello", "colour": "red"},
        b"not json",
        {"id": taken, "path": "u/alice/hello"},
        {"id": twice, "path": "u/alice/hello", "args": {"name": "1"}},
        {"id": twice, "path": "u/alice/hello", "args": {"name": "2"}},
    ])
    admit_all(client)
    assert sorted(outcome.rejected) == [1, 2, 3]
    assert "u/nobody/missing" in outcome.rejected[1] and "colour" in outcome.rejected[2]
    assert outcome.duplicates == [4, 6]
    assert outcome.ids[4] == taken and outcome.ids[5] == outcome.ids[6] == twice
    for index in (1, 2, 3):
        record = client.get_job(outcome.ids[index])
        assert record.status == Status.FAILURE and record.error is not None
        assert record.error["name"] == "InvalidSpec" and record.raw_spec
    assert client.get_job(taken).args == {"name": "first"}
    assert client.get_job(twice).args == {"name": "1"}
    assert redis_client.llen("gm:{wg:default}:ready") == 3  # first, ok, twice


def test_inbox_admits_a_batch_per_round(
    client: Gristmill, redis_client: redis.Redis, keys: Keys
) -> None:
    """BATCH + 10 specs waiting (two bad): two admit_next calls take them all, bad ones recorded."""
    store = Store(redis_client, keys)
    admission = client.admission
    raws = [json.dumps({"path": "u/alice/hello", "args": {"name": f"n{i}"}})
            for i in range(BATCH + 10)]
    raws[3] = "{broken"
    raws[BATCH + 2] = json.dumps({"path": "u/alice/hello", "permissioned_as": "u/alice"})
    redis_client.lpush(keys.inbox, *raws)
    admitter = InboxAdmitter(store, admission, "s1", threading.Event())
    assert admitter.admit_next(1)
    assert redis_client.llen(keys.inbox) == 10
    assert admitter.admit_next(1)
    assert redis_client.llen(keys.inbox) == 0 and redis_client.llen(admitter.processing) == 0
    assert redis_client.llen("gm:{wg:default}:ready") == BATCH + 8
    assert redis_client.zcard("gm:{wg:default}:ix:status:failure") == 2
    ready = [client.get_job(raw.decode()) for raw in
             redis_client.lrange("gm:{wg:default}:ready", 0, 2)]
    assert [job.args["name"] for job in ready] == ["n0", "n1", "n2"]  # oldest first
    assert {job.permissioned_as for job in ready} == {INBOX.name}


def test_header_is_not_found_for_unknown_refs(scripts: ScriptStore) -> None:
    """An unknown path or hash is NotFound, saying how to fix it."""
    from common.errors import NotFound

    with pytest.raises(NotFound, match="deploy one"):
        scripts.header("u/alice/none")
    with pytest.raises(NotFound, match="no script version"):
        scripts.header("0123456789abcdef")
