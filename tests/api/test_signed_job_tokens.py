"""Signed job tokens (the worker's WM_TOKEN): no Redis write to mint or revoke, live only while
their attempt runs. Over HTTP, as tests/api/test_security.py checks stored tokens."""

from __future__ import annotations

from typing import Any

import pytest

from auth import jobtokens
from common.models import Status
from tests.api.conftest import HOUR_MS, Api

pytestmark = pytest.mark.timeout(60)


def refused(answer: Any, status: int, *words: str) -> None:
    assert answer.status_code == status, (answer.status_code, answer.text)
    for word in words:
        assert word in answer.json()["error"], (word, answer.json())


@pytest.fixture
def alice(api: Api) -> Api:
    api.variable("u/alice/color", "blue", who="alice")
    return api


def started(api: Api, permissioned_as: str = "u/alice", who: str = "alice",
            attempt: str = "w1") -> tuple[str, str]:
    """A job marked running under a claim, as a worker's start does, and its signed token."""
    job_id, _ = api.running_job(permissioned_as, who=who)
    store = api.services.store
    jobs = store.claim_start("default", attempt, 1, attempt)
    assert [job.id for job in jobs] == [job_id]
    identity = api.services.identity
    token = identity.mint_job_token(job_id, permissioned_as, expires_at=identity.clock() + HOUR_MS,
                                    created_by=f"u/{who}", claim=jobs[0].claim)
    return job_id, token


def test_a_signed_token_works_while_its_attempt_runs_and_writes_nothing(alice: Api) -> None:
    """Minting touches no {auth} key; the token reads what its identity may read."""
    redis = alice.services.redis
    job_id, first = started(alice)
    before = sorted(redis.scan_iter(match="gm:{auth}:*token*"))
    identity = alice.services.identity
    token = identity.mint_job_token(job_id, "u/alice", expires_at=identity.clock() + HOUR_MS,
                                    claim=alice.services.store.get_job(job_id).claim)
    assert token.startswith(jobtokens.JOB_PREFIX) and first.startswith(jobtokens.JOB_PREFIX)
    assert sorted(redis.scan_iter(match="gm:{auth}:*token*")) == before
    assert alice.get("/api/variables/u/alice/color", token).json() == "blue"
    refused(alice.get("/api/variables/u/bob/x", token), 403)


def test_a_signed_token_dies_with_its_attempt(alice: Api) -> None:
    """Completed, or running again under another claim (a retry, a recovery): 401."""
    job_id, token = started(alice)
    store = alice.services.store
    job = store.get_job(job_id)
    store.release(job)  # back to queued: the attempt is over
    refused(alice.get("/api/variables/u/alice/color", token), 401, "its attempt has ended")
    again = store.claim_start("default", "w2", 1, "w2")
    assert [j.id for j in again] == [job_id]
    refused(alice.get("/api/variables/u/alice/color", token), 401, "its attempt has ended")
    identity = alice.services.identity
    current = identity.mint_job_token(job_id, "u/alice", expires_at=identity.clock() + HOUR_MS,
                                      claim=again[0].claim)
    assert alice.get("/api/variables/u/alice/color", current).json() == "blue"
    assert store.complete(again[0], Status.SUCCESS, {"result": 1}, retention_s=60)
    refused(alice.get("/api/variables/u/alice/color", current), 401, "its job has completed")


def test_a_forged_or_altered_token_is_refused(alice: Api) -> None:
    """Another key, a changed payload, a cut signature: unknown token."""
    job_id, token = started(alice)
    job = alice.services.store.get_job(job_id)
    forged = jobtokens.sign(jobtokens.new_key(), jobtokens.JobClaims(
        job_id, job.claim or "", "u/admin", None, 0, 2**42))
    payload = token.partition(".")[0]
    other, _ = started(alice)
    _, other_token = other, alice.services.identity.mint_job_token(
        other, "u/admin", expires_at=alice.services.identity.clock() + HOUR_MS,
        claim="x")
    swapped = payload + "." + other_token.partition(".")[2]
    for bad in (forged, swapped, payload + ".", token[:-3], jobtokens.JOB_PREFIX + "x" * 3000):
        refused(alice.get("/api/variables/u/alice/color", bad), 401, "unknown or revoked")


def test_a_signed_token_expires(alice: Api) -> None:
    """Past its expiry (timeout + margin) while the attempt still looks running: 401."""
    _, token = started(alice)
    identity = alice.services.identity
    now = identity.clock()
    identity.clock = lambda: now + 2 * HOUR_MS
    refused(alice.get("/api/variables/u/alice/color", token), 401, "token expired")


def test_a_signed_token_keeps_the_creators_role_cap(api: Api) -> None:
    """An operator's job run as a group: its signed token runs no raw code (403)."""
    identity = api.services.identity
    identity.create_user("olga", role="operator")
    identity.add_member("ops", "olga")
    job_id, _ = started(api, permissioned_as="g/ops", who="admin")
    token = identity.mint_job_token(job_id, "g/ops", expires_at=identity.clock() + HOUR_MS,
                                    created_by="u/olga", claim=api.services.store.get_job(job_id).claim)
    refused(api.post("/api/jobs/run/preview", token, json={
        "code": "def main():\n    return 1\n", "language": "python3"}), 403, "operator role")
    api.finish(job_id)
