"""The listing indexes stay exact through hardening's bulk cancel, lazy cancel and count trim."""

from __future__ import annotations

import pytest
import redis

from common import indexes
from common.models import Job, Kind, Status
from common.queries import JobFilter, Viewer, counts, list_page
from common.store import Store
from tests.integration.helpers import make_job

pytestmark = pytest.mark.cluster  # also on a Redis Cluster (tests/conftest.py)

NOW = 1_700_000_000_000
ALICE = Viewer(user="u/alice", identities=frozenset({"u/alice"}))
BOB = Viewer(user="u/bob", identities=frozenset({"u/bob"}))


def clocked(store: Store, now: int) -> Store:
    return Store(store.client, store.keys, clock=lambda: now)


def holding(redis_client: redis.Redis, store: Store, job: Job) -> list[str]:
    """Every index (``<dim>:<value>``) that holds ``job``'s member."""
    g = store.keys.group(job.group)
    member = indexes.member(job.created_at, job.id)
    return sorted(k.decode().removeprefix(g.index(""))
                  for k in redis_client.keys(g.index("*"))
                  if redis_client.zscore(k, member) is not None)


def all_members(redis_client: redis.Redis, store: Store) -> set[str]:
    """The ids of every member of every index of the group."""
    g = store.keys.group("default")
    return {indexes.split_member(m.decode())[1]
            for k in redis_client.keys(g.index("*")) for m in redis_client.zrange(k, 0, -1)}


def listed(store: Store, flt: JobFilter) -> list[str]:
    return [j.id for j in list_page(store, flt, limit=100).jobs]


def test_bulk_cancel_moves_every_job_to_its_canceled_sets(
    store: Store, redis_client: redis.Redis
) -> None:
    """cancel_queued (batches of cancel_many.lua): queued and live sets emptied, counts exact."""
    s = clocked(store, NOW)
    later = [make_job(created_at=NOW + i, scheduled_for=NOW + 10**6, created_by="u/alice",
                      permissioned_as="u/alice", kind=Kind.SCRIPT, script_path="u/alice/x")
             for i in range(3)]
    due = [make_job(created_at=NOW + 10 + i, scheduled_for=NOW, created_by="u/bob",
                    permissioned_as="u/bob") for i in range(4)]
    for job in [*later, *due]:
        s.enqueue(job, fresh_id=True)
    # The oldest due job is running: bulk cancel leaves it alone.
    assert store.claim("default", "w1", 1) == due[0].id
    running = s.start("default", due[0].id, "w1", "c1")
    assert running is not None

    assert s.cancel_queued("default", by="u/admin", reason="bulk", retention_s=60, batch=2) == 6

    canceled = [*later, *due[1:]]
    for job in canceled:
        who = "alice" if job in later else "bob"
        assert holding(redis_client, store, job) == sorted(
            [f"as:u/{who}:canceled", f"by:u/{who}:canceled", "status:canceled", "tag:python3",
             f"kind:{job.kind.value}", *(["path:u/alice/x"] if job in later else [])])
    assert holding(redis_client, store, due[0]) == [
        "as:u/bob:live", "by:u/bob:live", "kind:preview", "status:running", "tag:python3"]
    assert counts(store)["status"] == {"queued": 0, "running": 1, "success": 0, "failure": 0,
                                       "canceled": 6}
    assert counts(store)["kind"]["script"] == 3
    assert counts(store, viewer=ALICE)["status"] == {"live": 0, "success": 0, "failure": 0,
                                                     "canceled": 3}
    assert counts(store, viewer=BOB)["status"] == {"live": 1, "success": 0, "failure": 0,
                                                   "canceled": 3}
    assert set(listed(store, JobFilter(status=Status.CANCELED))) == {j.id for j in canceled}
    assert listed(store, JobFilter(status=Status.QUEUED)) == []
    assert redis_client.zcard(store.keys.group("default").ixtrim) == 6

    # Lazy cancel: the canceled ids are still in ready; a worker taking one moves nothing.
    assert store.claim("default", "w2", 1) == due[1].id
    assert s.start("default", due[1].id, "w2", "c2") is None
    assert counts(store)["status"]["canceled"] == 6
    assert counts(store)["status"]["running"] == 1
    # Repeating the bulk cancel finds nothing and changes nothing.
    assert s.cancel_queued("default", by="u/admin", reason="again", retention_s=60) == 0
    assert redis_client.zcard(store.keys.group("default").ixtrim) == 6

    # The time-based trim then removes the canceled jobs from every index.
    store.trim_completed("default", NOW + 1)
    assert all_members(redis_client, store) == {due[0].id}


def test_count_trim_removes_deleted_jobs_from_every_index(
    store: Store, redis_client: redis.Redis
) -> None:
    """trim_count deletes the oldest completed jobs and their index entries and ixtrim lines."""
    g = store.keys.group("default")
    finished: list[Job] = []
    for i in range(5):
        s = clocked(store, NOW + 100 * i)
        job = make_job(created_at=NOW + i, scheduled_for=NOW, created_by="u/alice",
                       permissioned_as="u/alice" if i % 2 else "u/bob")
        s.enqueue(job, fresh_id=True)
        assert store.claim("default", "w1", 1) == job.id
        started = s.start("default", job.id, "w1", f"c{i}")
        assert started is not None
        final = Status.SUCCESS if i % 2 else Status.FAILURE
        assert s.complete(started, final, {}, retention_s=600) == 1
        finished.append(job)
    s = clocked(store, NOW + 1000)
    canceled = make_job(created_at=NOW + 5, scheduled_for=NOW + 10**6, created_by="u/alice",
                        permissioned_as="u/alice")
    s.enqueue(canceled, fresh_id=True)
    assert s.cancel_queued("default", by="u/admin", reason="", retention_s=600) == 1
    rejected = make_job(created_at=NOW + 6, status=Status.FAILURE, completed_at=NOW + 1100,
                        created_by="u/bob", permissioned_as="u/bob")
    clocked(store, NOW + 1100).reject(rejected, retention_s=600, fresh_id=True)
    live = make_job(created_at=NOW + 7, scheduled_for=NOW + 10**6, created_by="u/alice",
                    permissioned_as="u/alice")
    s.enqueue(live, fresh_id=True)

    # 7 completed jobs; keep the 3 newest: finished[4], the canceled one and the rejected one.
    assert store.trim_count("default", 3) == 4
    assert store.trim_count("default", 3) == 0
    kept = {finished[4].id, canceled.id, rejected.id}
    assert all_members(redis_client, store) == kept | {live.id}
    assert redis_client.zcard(g.ixtrim) == 3
    assert {indexes.split_member(indexes.parse_trim(line.decode()).member)[1]
            for line in redis_client.zrange(g.ixtrim, 0, -1)} == kept
    assert counts(store)["status"] == {"queued": 1, "running": 0, "success": 0, "failure": 2,
                                       "canceled": 1}
    assert counts(store, viewer=ALICE)["status"] == {"live": 1, "success": 0, "failure": 0,
                                                     "canceled": 1}
    assert counts(store, viewer=BOB)["status"] == {"live": 0, "success": 0, "failure": 2,
                                                   "canceled": 0}
    assert set(listed(store, JobFilter())) == kept | {live.id}
    assert listed(store, JobFilter(status=Status.FAILURE)) == [rejected.id, finished[4].id]
    assert listed(store, JobFilter(status=Status.SUCCESS)) == []
    for job in finished[:4]:
        assert not redis_client.exists(g.job(job.id), store.keys.jobloc(job.id))

    # The rest leaves by time; nothing is left behind but the live job.
    store.trim_completed("default", NOW + 2000)
    assert all_members(redis_client, store) == {live.id}
    assert redis_client.zcard(g.ixtrim) == 0
