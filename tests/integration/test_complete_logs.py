"""complete.lua writes the attempt's last log lines with its outcome, in the one call, fenced and
checked for secrets the writer does not know of, and cut at the log limit like append_logs."""

from __future__ import annotations

import pytest
import redis

from common.models import Job, Status
from common.store import NEW_SECRETS, Completion, Store
from tests.integration.helpers import make_job

pytestmark = [pytest.mark.timeout(30), pytest.mark.cluster]


def running(store: Store) -> Job:
    store.enqueue(make_job(), fresh_id=True)
    (job,) = store.claim_start("default", "w1", 1, "c")
    return job


def lines(store: Store, job: Job) -> list[tuple[int, str, str]]:
    return [(e.attempt, e.stream, e.line) for e in store.logs(job.id)]


def test_the_last_lines_are_written_with_the_outcome_once(store: Store) -> None:
    """Lines and outcome land together; a repeated call (a lost reply) answers 2 and writes
    no line twice."""
    job = running(store)
    store.append_logs(job, [(1, "stdout", "first")])
    batch = [(2, "stdout", "second"), (3, "stderr", "third")]
    assert store.complete(job, Status.SUCCESS, {"result": 7}, retention_s=60, logs=batch,
                          known_redactions=0) == 1
    assert store.complete(job, Status.SUCCESS, {"result": 7}, retention_s=60, logs=batch,
                          known_redactions=0) == 2
    assert lines(store, job) == [(1, "stdout", "first"), (1, "stdout", "second"),
                                 (1, "stderr", "third")]
    record = store.get_job(job.id)
    assert (record.status, record.result, record.log_bytes) == (Status.SUCCESS, 7, 16)


def test_a_fenced_completion_writes_no_line(store: Store) -> None:
    """Another claim's completion is refused before any line is written."""
    job = running(store)
    stale = job.model_copy(update={"claim": "not-it"})
    assert store.complete(stale, Status.SUCCESS, {"result": 1}, retention_s=60,
                          logs=[(1, "stdout", "late")], known_redactions=0) == 0
    assert lines(store, job) == [] and store.get_job(job.id).status == Status.RUNNING


def test_unknown_secrets_write_nothing(store: Store, redis_client: redis.Redis) -> None:
    """A job that read a secret the writer has not redacted yet: -2, nothing written; with the
    entries known, the same call completes."""
    job = running(store)
    redis_client.sadd(store.keys.group("default").redact(job.id), "entry-1")
    batch = [(1, "stdout", "s3cret")]
    assert store.complete(job, Status.SUCCESS, {"result": "s3cret"}, retention_s=60, logs=batch,
                          known_redactions=0) == NEW_SECRETS
    assert lines(store, job) == [] and store.get_job(job.id).status == Status.RUNNING
    assert store.complete(job, Status.SUCCESS, {"result": "***"}, retention_s=60,
                          logs=[(1, "stdout", "***")], known_redactions=1) == 1
    assert lines(store, job) == [(1, "stdout", "***")]


def test_lines_past_the_log_limit_are_counted_and_marked(store: Store) -> None:
    """As append_logs: the lines that fit, one marker, the rest counted, and the completion's
    note of how much was dropped."""
    job = running(store)
    batch = [(1, "stdout", "x" * 6), (2, "stdout", "y" * 6), (3, "stdout", "z" * 6)]
    assert store.complete(job, Status.FAILURE, {"error": {"name": "E", "message": "",
                                                         "traceback": ""}},
                          retention_s=60, logs=batch, known_redactions=0, max_log_bytes=10) == 1
    got = lines(store, job)
    assert got[0] == (1, "stdout", "x" * 6)
    assert "reached its log limit of 10 bytes" in got[1][2]
    assert "2 log lines (12 bytes) beyond the log limit were dropped" in got[2][2]
    assert len(got) == 3


def test_completions_of_several_slots_in_one_pipeline(store: Store) -> None:
    """complete_many sends each completion's script in one pipeline; each is fenced on its own
    and the answers come back in order."""
    jobs = [make_job() for _ in range(3)]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    started = store.claim_start("default", "w1", 3, "p")
    stale = started[1].model_copy(update={"claim": "not-it"})
    answers = store.complete_many([
        Completion(started[0], Status.SUCCESS, {"result": 0}, 60, logs=[(1, "stdout", "zero")],
                   known_redactions=0),
        Completion(stale, Status.SUCCESS, {"result": 1}, 60, known_redactions=0),
        Completion(started[2], Status.FAILURE, {"error": {"name": "E", "message": "m",
                                                          "traceback": ""}}, 60),
    ])
    assert answers == [1, 0, 1]
    assert [store.get_job(j.id).status for j in started] == \
        [Status.SUCCESS, Status.RUNNING, Status.FAILURE]
    assert lines(store, started[0]) == [(1, "stdout", "zero")]
    store.client.script_flush()  # a restarted server: the pipeline loads the script and replays
    assert store.complete_many([
        Completion(started[1], Status.SUCCESS, {"result": 1}, 60),
        Completion(started[0], Status.SUCCESS, {"result": 0}, 60)]) == [1, 2]
