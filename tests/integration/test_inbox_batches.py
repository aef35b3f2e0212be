"""Stored batches in the inbox: enqueue_many's one-element-per-batch path, admitted by a scheduler."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from common.keys import INBOX_WAKE, Keys
from common.models import Status
from common.settings import Settings
from gristmill.client import Gristmill
from gristmill.embedded import EmbeddedRedis
from jobs.bulk import unpack_batch
from scheduler.inbox import InboxAdmitter

pytestmark = [pytest.mark.timeout(60), pytest.mark.cluster]

HELLO = "def main(name: str):\n    return name\n"


@pytest.fixture
def client(redis_client: redis.Redis, redis_server: EmbeddedRedis) -> Iterator[Gristmill]:
    gm = Gristmill(settings=Settings(redis_url=redis_server.url))
    gm.deploy_script("u/alice/hello", HELLO, "python3")
    yield gm
    gm.redis.close()


def admitter(client: Gristmill, name: str = "s1") -> InboxAdmitter:
    return InboxAdmitter(client.store, client.admission, name, threading.Event())


def test_a_batch_is_one_inbox_element_admitted_as_the_operator(
    client: Gristmill, redis_client: redis.Redis, keys: Keys
) -> None:
    """1,200 specs: one inbox element and one stored batch; admitted, they run as u/admin."""
    outcome = client.enqueue_many([{"path": "u/alice/hello", "args": {"name": str(i)}}
                                   for i in range(1200)], batch_size=5000)
    assert redis_client.llen(keys.inbox) == 1
    admission = admitter(client)
    assert admission.admit_next(1)
    assert redis_client.llen(keys.inbox) == 0 and redis_client.llen(admission.processing) == 0
    ready = [raw.decode() for raw in redis_client.lrange("gm:{wg:default}:ready", 0, -1)]
    assert ready == outcome.ids
    job = client.get_job(outcome.ids[1199])
    assert (job.args, job.created_by, job.permissioned_as) == ({"name": "1199"}, "u/admin",
                                                               "u/admin")
    batch_id = keys.batch_of(keys.batch_ref("x"))
    assert batch_id == "x" and keys.batch_of(b'{"path": "a"}') is None


def test_a_batch_admitted_again_after_a_crash_runs_no_job_twice(
    client: Gristmill, redis_client: redis.Redis, keys: Keys
) -> None:
    """A scheduler dies mid-batch: another takes the batch back and admits only the rest."""
    outcome = client.enqueue_many([{"path": "u/alice/hello", "args": {"name": str(i)}}
                                   for i in range(700)], batch_size=700)
    dead = admitter(client, "dead")
    ref = client.store.take_inbox_spec(dead.processing, 1)
    assert ref is not None and keys.batch_of(ref) is not None
    payload, first = client.store.inbox_batch(keys.batch_of(ref) or "")
    assert payload is not None and first
    # The dead one admitted the first 500 (one chunk), then died before forgetting the batch.
    stored = unpack_batch(payload)
    assert stored is not None and stored[1] == [True] * 700
    client.admission.submit_many(stored[0][:500], new_ids=stored[1][:500])
    admitter(client, "other").recover("dead")  # its lease expired
    assert redis_client.llen(keys.inbox) == 1
    assert admitter(client, "other").admit_next(1)
    assert redis_client.llen("gm:{wg:default}:ready") == 700
    assert redis_client.zcard("gm:{wg:default}:ix:status:queued") == 700
    assert not redis_client.exists(keys.inbox_batch(keys.batch_of(ref) or ""))
    assert {client.get_job(i).status for i in outcome.ids} == {Status.QUEUED}


def test_a_reference_to_no_batch_is_recorded_and_a_wake_is_nothing(
    client: Gristmill, redis_client: redis.Redis, keys: Keys
) -> None:
    """A hand-pushed @batch: naming nothing is a failed record saying so; @wake leaves none."""
    missing = str(uuid.uuid4())
    redis_client.lpush(keys.inbox, keys.batch_ref(missing), INBOX_WAKE)
    admission = admitter(client)
    assert admission.admit_next(1)
    assert redis_client.llen(keys.inbox) == 0 and redis_client.llen(admission.processing) == 0
    (entry,) = redis_client.zrange("gm:{wg:default}:ix:status:failure", 0, -1)
    record = client.get_job(entry.decode().split(":")[-1])
    assert record.status == Status.FAILURE and record.error is not None
    assert f"inbox batch {missing}: no stored batch" in record.error["message"]


def test_a_stored_batch_that_is_not_specs_is_recorded(
    client: Gristmill, redis_client: redis.Redis, keys: Keys
) -> None:
    """A batch key holding something else than a list of specs: one failed record, key gone."""
    batch_id = str(uuid.uuid4())
    redis_client.hset(keys.inbox_batch(batch_id), "specs", b"\xc1not msgpack")
    redis_client.lpush(keys.inbox, keys.batch_ref(batch_id))
    assert admitter(client).admit_next(1)
    assert redis_client.zcard("gm:{wg:default}:ix:status:failure") == 1
    assert not redis_client.exists(keys.inbox_batch(batch_id))


def test_get_job_of_a_job_still_in_the_inbox_says_so(client: Gristmill) -> None:
    """Before admission, get_job says the job may wait in the inbox; after, it finds it."""
    from common.errors import NotFound

    (job_id,) = client.enqueue_many([{"path": "u/alice/hello", "args": {"name": "a"}}]).ids
    with pytest.raises(NotFound, match="wait in the inbox"):
        client.get_job(job_id)
    assert admitter(client).admit_next(1)
    assert client.get_job(job_id).status == Status.QUEUED
