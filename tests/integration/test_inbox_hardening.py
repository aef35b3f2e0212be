"""The inbox never stops on one spec: any bytes become a record, and the next spec follows."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from common.keys import INBOX_WAKE
from common.models import Status
from common.settings import Settings
from common.store import Store
from jobs import spec as specs
from jobs.admission import Admission, BatchOutcome, RawSpec
from jobs.scripts import ScriptStore
from scheduler.inbox import InboxAdmitter

pytestmark = pytest.mark.cluster  # also on a Redis Cluster (tests/conftest.py)

UUID = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
# The inbox property runs 2,000 examples in CI (CI=true), fewer on a laptop.
EXAMPLES = 2000 if os.environ.get("CI", "").lower() in ("1", "true", "yes") else 150
SENTINEL = json.dumps({"path": "u/alice/hello", "args": {"name": "next"}})


class Recording(Admission):
    """Admission that remembers what each raw spec became (a rejection made by the admitter
    itself, e.g. of a ``@batch:`` reference to no stored batch, too)."""

    outcomes: list[tuple[str, str]]
    _admitting = False

    def admit_raw(self, raw: bytes) -> tuple[str, str]:
        self._admitting = True
        try:
            answer = super().admit_raw(raw)
        finally:
            self._admitting = False
        self.outcomes.append(answer)
        return answer

    def submit_many(self, batch: Sequence[RawSpec], **options: Any) -> BatchOutcome:
        self._admitting = True
        try:
            answer = super().submit_many(batch, **options)
        finally:
            self._admitting = False
        for i, job_id in enumerate(answer.ids):
            self.outcomes.append((job_id, "rejected" if i in answer.rejected else
                                  "duplicate" if i in answer.duplicates else "accepted"))
        return answer

    def reject(self, raw: bytes | str, message: str) -> str:
        job_id = super().reject(raw, message)
        if not self._admitting:  # else the two methods above record it
            self.outcomes.append((job_id, "rejected"))
        return job_id


@pytest.fixture
def admission(store: Store, scripts: ScriptStore) -> Recording:
    scripts.deploy("u/alice/hello", "python3", "def main(name: str):\n    return name\n")
    recording = Recording(store, scripts, Settings(redis_url="redis://unused"))
    recording.outcomes = []
    return recording


@pytest.fixture
def admitter(store: Store, admission: Recording) -> InboxAdmitter:
    return InboxAdmitter(store, admission, "s1", threading.Event())


def admit_then_sentinel(raw: bytes, admitter: InboxAdmitter, admission: Recording,
                        client: redis.Redis) -> tuple[str, str]:
    """Push ``raw`` and a valid spec; both must be admitted, in order. (``@wake``, the
    element a stopping scheduler pushes to end its inbox's wait, is reserved: it leaves no
    record, and stands for no job; ``first`` is then the sentinel's.)"""
    admission.outcomes.clear()
    client.lpush(admitter.inbox, raw, SENTINEL)
    assert admitter.admit_next(1)  # both, as one batch
    assert client.llen(admitter.processing) == 0 and client.llen(admitter.inbox) == 0
    if raw == INBOX_WAKE:
        (second,) = admission.outcomes
        assert second[1] == "accepted"
        return second
    first, second = admission.outcomes
    assert second[1] == "accepted"
    return first


def deep(n: int, open_: str = "[", close: str = "]") -> str:
    return open_ * n + close * n


NAMED = {
    "arrays 10,000 deep": deep(10_000),
    "objects 10,000 deep": '{"a":' * 10_000 + "1" + "}" * 10_000,
    "args 600 deep": json.dumps({"id": UUID, "path": "u/alice/hello",
                                 "args": {"x": json.loads(deep(600))}}),
    "int beyond 64 bits": json.dumps({"id": UUID, "path": "u/alice/hello", "args": {"n": 2**70}}),
    "surrogate in args": '{"path": "u/alice/hello", "args": {"name": "\\ud800"}}',
    "surrogate in an args key": '{"path": "u/alice/hello", "args": {"\\udfff": 1}}',
    "surrogate in code": '{"code": "echo \\ud800", "language": "bash"}',
    "surrogate in permissioned_as": '{"path": "u/alice/hello", "permissioned_as": "u/\\ud800"}',
    "surrogate in tag": '{"path": "u/alice/hello", "tag": "\\ud800"}',
    "NaN": '{"path": "u/alice/hello", "args": {"x": NaN}}',
    "timeout_s 10^18": '{"path": "u/alice/hello", "timeout_s": 1000000000000000000}',
    "priority 10^9": '{"path": "u/alice/hello", "priority": 1000000000}',
    "scheduled_for 1e999": '{"path": "u/alice/hello", "scheduled_for": 1e999}',
    "scheduled_for year 10000": '{"path": "u/alice/hello", "scheduled_for": 253402300800000}',
    "scheduled_for 400 digits": '{"path": "u/alice/hello", "scheduled_for": "' + "9" * 400 + '"}',
    "scheduled_for negative": '{"path": "u/alice/hello", "scheduled_for": -5}',
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("raw", NAMED.values(), ids=NAMED.keys())
def test_named_specs_are_rejected_and_the_next_is_admitted(
    raw: str, admitter: InboxAdmitter, admission: Recording, store: Store,
    redis_client: redis.Redis,
) -> None:
    """Each spec that used to kill the inbox thread becomes an InvalidSpec record."""
    job_id, outcome = admit_then_sentinel(raw.encode(), admitter, admission, redis_client)
    assert outcome == "rejected"
    job = store.get_job(job_id)
    assert job.status == Status.FAILURE and job.error is not None
    assert job.error["name"] == "InvalidSpec" and job.error["message"]
    assert job.raw_spec is not None and job.raw_spec[:100] == raw[:100]


@pytest.mark.timeout(30)
def test_bounds_are_named_in_the_error(admission: Recording, store: Store) -> None:
    """Out-of-range numbers are refused with the field and its limit."""
    cases = {
        '{"path": "u/alice/hello", "timeout_s": 1000000000000000000}': "timeout_s",
        '{"path": "u/alice/hello", "priority": -5000}': "priority",
        '{"path": "u/alice/hello", "scheduled_for": 1e999}': "scheduled_for",
        '{"path": "u/alice/hello", "args": {"a": {"b": [2e400]}}}': "args.a.b[0]",
        '{"path": "u/alice/hello", "args": {"a": {"b": [36893488147419103232]}}}': "args.a.b[0]",
    }
    for raw, field in cases.items():
        job_id, outcome = admission.admit_raw(raw.encode())
        assert outcome == "rejected", raw
        assert field in (store.get_job(job_id).error or {})["message"], raw


@pytest.mark.timeout(30)
def test_failure_keeps_the_producers_id(admission: Recording, store: Store,
                                        redis_client: redis.Redis) -> None:
    """A rejected spec with a producer id is stored under that id, and jobloc points at it."""
    raw = json.dumps({"id": UUID, "path": "u/alice/hello", "args": {"n": 2**70}}).encode()
    assert admission.admit_raw(raw) == (UUID, "rejected")
    assert store.get_job(UUID).status == Status.FAILURE


@pytest.mark.timeout(30)
def test_a_dangling_location_does_not_cost_the_producers_id(
    admission: Recording, store: Store, redis_client: redis.Redis
) -> None:
    """A location left without a record (interrupted admission) is taken by the rejection."""
    redis_client.set(store.keys.jobloc(UUID), "default")
    raw = json.dumps({"id": UUID, "path": "u/nobody/x"}).encode()
    assert admission.admit_raw(raw) == (UUID, "rejected")
    assert store.get_job(UUID).error is not None


@pytest.mark.timeout(30)
def test_an_existing_job_is_not_clobbered_by_a_bad_spec_with_its_id(
    admission: Recording, store: Store
) -> None:
    """A reused id with a bad spec is recorded under a new id; the first job stays."""
    good = json.dumps({"id": UUID, "path": "u/alice/hello", "args": {"name": "a"}}).encode()
    assert admission.admit_raw(good) == (UUID, "accepted")
    other, outcome = admission.admit_raw(json.dumps({"id": UUID, "path": 1}).encode())
    assert outcome == "rejected" and other != UUID
    assert store.get_job(UUID).status == Status.QUEUED


@pytest.mark.timeout(30)
def test_a_token_in_a_rejected_spec_is_redacted(admission: Recording, store: Store) -> None:
    """The kept raw spec never shows the API token."""
    secret = "gm_" + "A1b2" * 11
    for raw in (json.dumps({"path": "u/nobody/x", "token": secret}),
                '{"path": "u/nobody/x", "token": "' + secret + '", ',  # not JSON
                json.dumps({"path": "u/nobody/x", "args": {"t": secret[:30]}, "token": secret[:30]})):
        job_id, outcome = admission.admit_raw(raw.encode())
        assert outcome == "rejected"
        kept = store.get_job(job_id).raw_spec or ""
        assert secret[:30] not in kept and specs.REDACTED in kept, kept


@pytest.mark.timeout(30)
def test_a_huge_raw_spec_is_kept_truncated(admission: Recording, store: Store) -> None:
    """Beyond MAX_RAW_SPEC_KEPT the raw spec is cut, with a marker saying so."""
    raw = json.dumps({"path": "u/nobody/x", "args": {"blob": "x" * 300_000}}).encode()
    job_id, _ = admission.admit_raw(raw)
    kept = store.get_job(job_id).raw_spec or ""
    assert kept.startswith(raw[:1000].decode())
    assert len(kept) < specs.MAX_RAW_SPEC_KEPT + 200
    assert kept.endswith(f"cut at {specs.MAX_RAW_SPEC_KEPT} of {len(raw)} characters]")


@pytest.mark.timeout(30)
def test_a_stopped_inbox_hands_its_processing_list_back(
    store: Store, admission: Recording, redis_client: redis.Redis
) -> None:
    """Specs left in a stopping scheduler's processing list return to the inbox, oldest first."""
    stopping = threading.Event()
    admitter = InboxAdmitter(store, admission, "s1", stopping)
    redis_client.lpush(admitter.processing, b"older", b"newer")  # what an interruption leaves
    redis_client.lpush(admitter.inbox, b"newest")
    stopping.set()
    admitter.run()
    assert redis_client.llen(admitter.processing) == 0
    assert redis_client.lrange(admitter.inbox, 0, -1) == [b"newest", b"newer", b"older"]


SURROGATES = st.characters(codec=None, blacklist_categories=())
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(SURROGATES, max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(SURROGATES, max_size=6),
                                                                inner, max_size=4),
    max_leaves=16,
)
FIELDS = st.sampled_from(["id", "path", "hash", "code", "language", "flow_path", "flow", "args",
                          "scheduled_for", "tag", "priority", "timeout_s", "retry",
                          "permissioned_as", "token"])
SPECS = st.dictionaries(FIELDS, JSON | st.sampled_from(["u/alice/hello", "bash", UUID]), max_size=6)


@pytest.mark.timeout(600)
@hsettings(max_examples=EXAMPLES, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=st.binary(max_size=64) | JSON.map(json.dumps) | SPECS.map(json.dumps))
@example(raw=b"@batch:")  # the inbox's reserved elements, found by hypothesis
@example(raw=b"@batch:no-such-batch")
@example(raw=INBOX_WAKE)
def test_any_bytes_become_a_record_and_the_next_spec_follows(
    raw: bytes | str, admitter: InboxAdmitter, admission: Recording, store: Store,
    redis_client: redis.Redis,
) -> None:
    """Arbitrary bytes or JSON: a record (accepted, duplicate or InvalidSpec), then the next spec."""
    data = raw.encode() if isinstance(raw, str) else raw
    job_id, outcome = admit_then_sentinel(data, admitter, admission, redis_client)
    job = store.get_job(job_id)
    if outcome == "rejected":
        assert job.status == Status.FAILURE and (job.error or {})["name"] == "InvalidSpec"
    else:
        assert outcome in ("accepted", "duplicate")


@pytest.mark.timeout(30)
def test_a_spec_that_cannot_even_be_rejected_does_not_stop_the_inbox(
    admitter: InboxAdmitter, admission: Recording, redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Admission and rejection both failing (a bug): the spec is logged and the next follows."""
    def broken(raw: bytes | str, message: str) -> str:
        raise RuntimeError("a bug in reject")

    original = admission.admit_raw

    def failing_once(raw: bytes) -> tuple[str, str]:
        if raw == b"poison":
            raise RuntimeError("a bug in admission")
        return original(raw)

    monkeypatch.setattr(admission, "reject", broken)
    monkeypatch.setattr(admission, "admit_raw", failing_once)
    redis_client.lpush(admitter.inbox, b"poison", SENTINEL)
    assert admitter.admit_next(1)  # the batch fails on the bug: then one by one
    assert redis_client.llen(admitter.processing) == 0
    assert admission.outcomes[-1][1] == "accepted"


@pytest.mark.timeout(30)
def test_a_script_default_timeout_has_the_same_bound(scripts: ScriptStore) -> None:
    """A version's timeout_s default is bounded like a spec's (it becomes the job's)."""
    from common.errors import SpecError

    with pytest.raises(SpecError, match="timeout_s must be 1 to 2592000"):
        scripts.deploy("u/alice/long", "bash", "sleep 1", timeout_s=10**18)
