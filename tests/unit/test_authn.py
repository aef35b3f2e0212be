"""require_live over fakeredis (plain HSET/HGETALL, no Lua): which job tokens a record lets through."""

from __future__ import annotations

from dataclasses import dataclass

import fakeredis
import pytest
from structlog.testing import capture_logs

from auth.authn import require_live
from common.errors import AuthError
from common.keys import Keys
from common.models import Job, Kind, Status
from common.store import Store

pytestmark = pytest.mark.timeout(10)


@dataclass(frozen=True)
class Token:
    kind: str
    job_id: str | None


@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(), Keys("gm"))


def stored(store: Store, status: Status, damage: dict[str, bytes]) -> str:
    """A job record written as the transition scripts leave it, with ``damage`` written over it."""
    job = Job(id="j1", kind=Kind.PREVIEW, status=status, tag="python3", group="default",
              language="python3", code="def main():\n    return 1\n", scheduled_for=0, created_at=0)
    store.client.set(store.keys.jobloc(job.id), job.group)
    store.client.hset(store.keys.group(job.group).job(job.id), mapping={**job.to_redis(), **damage})
    return job.id


@pytest.mark.parametrize(("status", "damage", "refusal"), [
    (Status.RUNNING, {}, None),
    (Status.QUEUED, {}, None),
    (Status.SUCCESS, {}, "this job token expired: its job has completed"),
    (Status.RUNNING, {"kind": b"bogus"}, "this job token's job record j1 cannot be read: "),
    (Status.RUNNING, {"status": b"halfway"}, "this job token's job record j1 cannot be read: "),
])
def test_a_job_token_lives_only_while_its_record_says_so(
    store: Store, status: Status, damage: dict[str, bytes], refusal: str | None,
) -> None:
    """Live while queued or running; refused once completed, and refused (not a 500) when the
    record cannot be read, since a token that cannot be checked must not pass."""
    token = Token("job", stored(store, status, damage))
    if refusal is None:
        require_live(token, store)
        return
    with pytest.raises(AuthError) as refused:
        require_live(token, store)
    assert str(refused.value).startswith(refusal)
    for field in damage:
        assert field in str(refused.value)


def test_a_token_of_an_unreadable_record_is_logged_naming_the_job(store: Store) -> None:
    """The refusal of a damaged record's token leaves a warning naming the job and the field."""
    token = Token("job", stored(store, Status.RUNNING, {"kind": b"bogus"}))
    with capture_logs() as events, pytest.raises(AuthError):
        require_live(token, store)
    (event,) = events
    assert (event["log_level"], event["job_id"]) == ("warning", "j1")
    assert "kind" in event["problem"]


def test_a_token_of_a_job_that_is_gone_is_refused(store: Store) -> None:
    """No record at all: the job no longer exists."""
    with pytest.raises(AuthError, match="no longer exists"):
        require_live(Token("job", "missing"), store)
