"""Listing from the indexes the transition scripts keep: filters, cursors, visibility, trim."""

from __future__ import annotations

import pytest
import redis

from common import indexes
from common.errors import BadRecord
from common.models import Kind, Status
from common.queries import EVERYONE, JobFilter, Viewer, counts, iter_jobs, list_jobs, list_page
from common.store import Store
from tests.integration.helpers import make_job

pytestmark = pytest.mark.cluster  # also on a Redis Cluster (tests/conftest.py)

NOW = 1_700_000_000_000


def clocked(store: Store, now: int) -> Store:
    return Store(store.client, store.keys, clock=lambda: now)


def ids(store: Store, flt: JobFilter | None = None, viewer: Viewer | None = None) -> list[str]:
    found = iter_jobs(store, flt or JobFilter(), page_size=3, viewer=viewer or EVERYONE)
    return [job.id for job in found]


def status_sets(redis_client: redis.Redis, store: Store, job_id: str) -> list[str]:
    """The status indexes that hold ``job_id``."""
    g = store.keys.group("default")
    return [s.value for s in Status
            if any(m.decode().endswith(job_id)
                   for m in redis_client.zrange(g.index(indexes.status_entry(s)), 0, -1))]


def test_every_transition_moves_the_job_between_status_indexes(
    store: Store, redis_client: redis.Redis
) -> None:
    """enqueue, start, retry, start, complete: the job is always in exactly its status's set."""
    s = clocked(store, NOW)
    job = make_job(scheduled_for=NOW, created_at=NOW)
    s.enqueue(job, fresh_id=True)
    assert status_sets(redis_client, store, job.id) == ["queued"]
    assert store.claim("default", "w1", 1) == job.id
    running = s.start("default", job.id, "w1", "c1")
    assert running is not None
    assert status_sets(redis_client, store, job.id) == ["running"]
    assert s.retry(running, {"error": {"name": "E"}}, at_ms=NOW)
    assert status_sets(redis_client, store, job.id) == ["queued"]
    assert store.claim("default", "w1", 1) == job.id
    running = s.start("default", job.id, "w1", "c2")
    assert running is not None
    assert s.complete(running, Status.FAILURE, {}, retention_s=60) == 1
    assert status_sets(redis_client, store, job.id) == ["failure"]
    assert ids(store, JobFilter(status=Status.FAILURE)) == [job.id]
    assert ids(store, JobFilter(status=Status.QUEUED)) == []


def test_cancel_and_reject_land_in_their_status_index(store: Store) -> None:
    """A canceled queued job and a rejected spec are listed under their final status."""
    s = clocked(store, NOW)
    queued = make_job(scheduled_for=NOW + 60_000, created_at=NOW)
    s.enqueue(queued, fresh_id=True)
    assert s.cancel(queued.id, by="u/admin", reason="", retention_s=60) == "canceled"
    rejected = make_job(created_at=NOW + 1, status=Status.FAILURE, completed_at=NOW + 1)
    s.reject(rejected, retention_s=60, fresh_id=True)
    assert ids(store, JobFilter(status=Status.CANCELED)) == [queued.id]
    assert ids(store, JobFilter(status=Status.FAILURE)) == [rejected.id]
    assert counts(store)["status"] == {"queued": 0, "running": 0, "success": 0, "failure": 1,
                                       "canceled": 1}


def test_cursor_pages_are_exact_with_ties_and_across_groups(store: Store) -> None:
    """Jobs created in the same millisecond, in two groups, page newest first with no gap or repeat."""
    s = clocked(store, NOW)
    made = [make_job(group=g, created_at=NOW + i // 4, scheduled_for=NOW + 10**6)
            for i, g in enumerate(["default", "gpu"] * 5)]
    for job in made:
        s.enqueue(job, fresh_id=True)
    expected = [j.id for j in sorted(made, key=lambda j: (j.created_at, j.id), reverse=True)]
    pages, cursor = [], None
    while True:
        page = list_page(store, cursor=cursor, limit=3)
        pages.append([j.id for j in page.jobs])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [i for p in pages for i in p] == expected
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert ids(store, JobFilter(group="gpu")) == [i for i in expected
                                                  if i in {j.id for j in made[1::2]}]


def test_filters_and_time_range(store: Store) -> None:
    """Each indexed filter, their combination, and a created_at window select exactly their jobs."""
    s = clocked(store, NOW)
    a = make_job(created_at=NOW, kind=Kind.SCRIPT, script_path="u/alice/x", created_by="u/alice",
                 permissioned_as="u/alice", tag="python3", scheduled_for=NOW + 10**6)
    b = make_job(created_at=NOW + 10, kind=Kind.SCRIPT, script_path="u/bob/y", created_by="u/bob",
                 permissioned_as="g/ops", tag="bash", schedule_path="u/bob/nightly",
                 scheduled_for=NOW + 10**6)
    c = make_job(created_at=NOW + 20, created_by="u/alice", permissioned_as="u/alice",
                 scheduled_for=NOW + 10**6)
    for job in (a, b, c):
        s.enqueue(job, fresh_id=True)
    assert ids(store, JobFilter(kind=Kind.SCRIPT)) == [b.id, a.id]
    assert ids(store, JobFilter(path="u/alice/x")) == [a.id]
    assert ids(store, JobFilter(created_by="u/alice")) == [c.id, a.id]
    assert ids(store, JobFilter(permissioned_as="g/ops")) == [b.id]
    assert ids(store, JobFilter(tag="bash")) == [b.id]
    assert ids(store, JobFilter(schedule="u/bob/nightly")) == [b.id]
    assert ids(store, JobFilter(kind=Kind.SCRIPT, created_by="u/alice")) == [a.id]
    assert ids(store, JobFilter(kind=Kind.PREVIEW, status=Status.RUNNING)) == []
    assert ids(store, JobFilter(created_after=NOW + 10, created_before=NOW + 20)) == [b.id]
    assert ids(store, JobFilter(created_before=NOW + 10)) == [a.id]


def test_a_user_lists_only_what_he_may_see(store: Store, redis_client: redis.Redis) -> None:
    """Alice (in ops) sees her jobs and ops' jobs; no other index or record is read."""
    s = clocked(store, NOW)
    mine = make_job(created_at=NOW, created_by="u/alice", permissioned_as="u/alice")
    ops = make_job(created_at=NOW + 1, created_by="u/bob", permissioned_as="g/ops")
    bobs = make_job(created_at=NOW + 2, created_by="u/bob", permissioned_as="u/bob",
                    kind=Kind.SCRIPT)
    for job in (mine, ops, bobs):
        s.enqueue(job, fresh_id=True)
    alice = Viewer(user="u/alice", identities=frozenset({"u/alice", "g/ops"}))
    assert ids(store, viewer=alice) == [ops.id, mine.id]
    assert ids(store, JobFilter(created_by="u/bob"), viewer=alice) == [ops.id]
    assert ids(store, JobFilter(kind=Kind.SCRIPT), viewer=alice) == []
    page = list_page(store, JobFilter(kind=Kind.PREVIEW), viewer=alice)
    assert set(page.driver) == {f"{who}:{part}" for who in ("by:u/alice", "as:u/alice", "as:g/ops")
                                for part in ("live", "success", "failure", "canceled")}
    # The records read are those of the driver's members only: none of Bob's own jobs.
    redis_client.delete(store.keys.group("default").job(bobs.id))
    assert ids(store, viewer=alice) == [ops.id, mine.id]


def test_a_users_status_filter_reads_his_own_partitions_exactly(store: Store) -> None:
    """Alice's failures come from her failure sets alone: no other job is scanned."""
    s = clocked(store, NOW)
    alice = Viewer(user="u/alice", identities=frozenset({"u/alice", "g/ops"}))
    made = []
    for i in range(30):
        job = make_job(created_at=NOW + i, created_by="u/alice" if i % 3 else "u/bob",
                       permissioned_as="u/alice" if i % 3 else "g/ops", scheduled_for=NOW)
        s.enqueue(job, fresh_id=True)
        made.append(job)
    for i, job in enumerate(made):
        assert store.claim("default", "w1", 1) == job.id
        running = s.start("default", job.id, "w1", f"c{i}")
        assert running is not None
        final = Status.FAILURE if i % 5 == 0 else Status.SUCCESS
        assert s.complete(running, final, {}, retention_s=60) == 1
    failed = [j.id for j in reversed(made) if made.index(j) % 5 == 0]
    page = list_page(store, JobFilter(status=Status.FAILURE), viewer=alice, limit=100)
    assert [j.id for j in page.jobs] == failed
    assert page.scanned == len(failed)
    assert set(page.driver) == {"by:u/alice:failure", "as:u/alice:failure", "as:g/ops:failure"}
    assert counts(store, viewer=alice)["status"] == {"live": 0, "success": 24, "failure": 6,
                                                    "canceled": 0}
    bob = Viewer(user="u/bob", identities=frozenset({"u/bob"}))
    assert [j.id for j in list_page(store, JobFilter(status=Status.FAILURE), viewer=bob).jobs] == [
        j.id for j in reversed(made) if made.index(j) % 15 == 0]


def test_iter_jobs_passes_damaged_rows_to_the_caller_and_goes_on(
    store: Store, redis_client: redis.Redis
) -> None:
    """Rows this version cannot read, on the first and on a later page, reach ``on_damaged``
    naming their jobs; the readable jobs still come, every one, newest first."""
    s = clocked(store, NOW)
    made = [make_job(created_at=NOW + i, scheduled_for=NOW + 10**6) for i in range(7)]
    for job in made:
        s.enqueue(job, fresh_id=True)
    newest_first = [j.id for j in reversed(made)]
    bad = {newest_first[1], newest_first[5]}
    for job_id in bad:
        redis_client.hset(store.keys.group("default").job(job_id), "kind", "bogus")
    readable = [i for i in newest_first if i not in bad]

    damaged: list[BadRecord] = []
    found = iter_jobs(store, page_size=3, on_damaged=damaged.append)
    assert [j.id for j in found] == readable
    assert sorted(d.job_id for d in damaged) == sorted(bad)
    assert all("kind" in d.problem for d in damaged)

    assert ids(store) == readable  # without on_damaged: left out, the iteration unbroken
    passed: list[BadRecord] = []
    assert [j.id for j in list_jobs(store, limit=10, on_damaged=passed.append)] == readable
    assert sorted(d.job_id for d in passed) == sorted(bad)


def test_a_sparse_filter_returns_short_pages_with_a_cursor(store: Store) -> None:
    """Past the scan budget a page comes back short with a cursor; following it finds the rest."""
    s = clocked(store, NOW)
    rare = make_job(created_at=NOW, kind=Kind.SCRIPT, created_by="u/alice",
                    permissioned_as="u/alice", scheduled_for=NOW + 10**6)
    s.enqueue(rare, fresh_id=True)
    for i in range(250):
        s.enqueue(make_job(created_at=NOW + 1 + i, created_by="u/alice",
                           permissioned_as="u/alice", scheduled_for=NOW + 10**6), fresh_id=True)
    alice = Viewer(user="u/alice", identities=frozenset({"u/alice"}))
    flt = JobFilter(kind=Kind.SCRIPT)
    first = list_page(store, flt, viewer=alice, limit=10, scan_budget=100)
    assert first.jobs == [] and first.next_cursor is not None and first.scanned >= 100
    found, cursor = [], first.next_cursor
    while cursor is not None:
        page = list_page(store, flt, viewer=alice, cursor=cursor, limit=10, scan_budget=100)
        found += [j.id for j in page.jobs]
        cursor = page.next_cursor
    assert found == [rare.id]


def test_retention_trim_removes_index_entries_even_after_the_record_expired(
    store: Store, redis_client: redis.Redis
) -> None:
    """The trim reads ixtrim, so a completed job leaves every index though its record is gone."""
    s = clocked(store, NOW)
    job = make_job(created_at=NOW, scheduled_for=NOW + 60_000, kind=Kind.SCRIPT,
                   script_path="u/alice/x", created_by="u/alice", permissioned_as="u/alice")
    keep = make_job(created_at=NOW + 1, scheduled_for=NOW + 60_000)
    s.enqueue(job, fresh_id=True)
    s.enqueue(keep, fresh_id=True)
    s.cancel(job.id, by="u/admin", reason="", retention_s=60)
    g = store.keys.group("default")
    redis_client.delete(g.job(job.id))  # as if its TTL had run out
    assert store.trim_completed("default", NOW + 1) == 1
    ix_keys = [k.decode() for k in redis_client.keys(g.index("*"))]
    leftovers = [k for k in ix_keys if any(m.decode().endswith(job.id)
                                           for m in redis_client.zrange(k, 0, -1))]
    assert leftovers == []
    assert redis_client.zcard(g.ixtrim) == 0
    assert ids(store) == [keep.id]
    assert counts(store)["kind"]["script"] == 0


def test_recovery_moves_a_lost_job_to_its_final_sets(store: Store, redis_client: redis.Redis
                                                     ) -> None:
    """A job whose worker died with no restart left leaves every live set for its failure sets."""
    s = clocked(store, NOW)
    job = make_job(created_at=NOW, scheduled_for=NOW, created_by="u/alice",
                   permissioned_as="g/ops")
    s.enqueue(job, fresh_id=True)
    assert store.claim("default", "w1", 1) == job.id
    assert s.start("default", job.id, "w1", "c1") is not None
    assert s.recover("default", job.id, "w1", max_restarts=0, retention_s=60) == "failed"
    g = store.keys.group("default")
    holding = sorted(k.decode().removeprefix(g.index(""))
                     for k in redis_client.keys(g.index("*"))
                     if redis_client.zscore(k, indexes.member(NOW, job.id)) is not None)
    assert holding == ["as:g/ops:failure", "by:u/alice:failure", "kind:preview",
                       "status:failure", "tag:python3"]
    alice = Viewer(user="u/alice", identities=frozenset({"u/alice"}))
    assert ids(store, JobFilter(status=Status.FAILURE), alice) == [job.id]
    assert store.trim_completed("default", NOW + 1) == 1
    assert not any(redis_client.zcard(k) for k in redis_client.keys(g.index("*")))
