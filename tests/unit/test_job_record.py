"""A job record read back from Redis: our own records decode exactly; others fail clearly."""

from __future__ import annotations

from typing import Any

import pytest

from common.models import BadRecord, Job, Kind, Status, UnreadableJob

pytestmark = pytest.mark.timeout(10)


def flat_record(job: Job, **raw: bytes) -> list[bytes]:
    """HGETALL's flat reply for ``job`` as to_redis writes it, with ``raw`` fields replaced."""
    fields = {k.encode(): v if isinstance(v, bytes) else str(v).encode()
              for k, v in job.to_redis().items()}
    fields.update({k.encode(): v for k, v in raw.items()})
    return [item for pair in fields.items() for item in pair]


def job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "id": "j1", "kind": Kind.SCRIPT, "status": Status.RUNNING, "tag": "default",
        "group": "default", "language": "python3", "scheduled_for": 5, "created_at": 4}
    return Job(**{**base, **fields})


@pytest.mark.parametrize("record", [
    job(),
    job(args={"n": 1, "nested": {"list": [1, "two", None]}}, retry={"max_attempts": 3},
        attempt=2, started_at=7, worker="w1", claim="c0001", script_path="u/a/s",
        script_hash="abc", ix="ix\tentry", priority=-3),
    job(status=Status.FAILURE, error={"name": "E", "message": "m", "traceback": ""},
        duration_ms=12, log_bytes=0, completed_at=9),
    job(status=Status.SUCCESS, result=[1, {"a": "é"}], kind=Kind.PREVIEW, code="print(1)"),
    job(some_future_field="kept as text"),
], ids=["minimal", "running", "failed", "result", "extra"])
def test_our_records_decode_to_the_job_written(record: Job) -> None:
    decoded = Job.from_flat(flat_record(record))
    assert decoded == record
    assert decoded.model_dump() == record.model_dump()
    assert Job.from_redis(dict(zip(*[iter(flat_record(record))] * 2, strict=True))) == record


@pytest.mark.parametrize(("raw", "says"), [
    ({"kind": b"teleport"}, "field kind"),
    ({"status": b"paused"}, "field status"),
    ({"attempt": b"two"}, "field 'attempt' cannot be decoded"),
    ({"args": b"\xc1"}, "field 'args' cannot be decoded"),
    ({"args": b"\x91\x01"}, "field args"),  # msgpack of [1]: not a dict
    ({"tag": b"\xff\xfe"}, "field 'tag' cannot be decoded"),
    ({"retry": b"\xa3abc"}, "field retry"),  # msgpack of "abc": not a policy dict
], ids=["kind", "status", "int", "msgpack", "args-type", "utf8", "retry-type"])
def test_a_record_we_cannot_read_fails_naming_the_field(raw: dict[str, bytes], says: str) -> None:
    with pytest.raises(BadRecord, match="job record j1") as caught:
        Job.from_flat(flat_record(job(), **raw))
    assert says in str(caught.value)


def test_a_record_missing_required_fields_fails_clearly() -> None:
    with pytest.raises(BadRecord, match="field group: Field required"):
        Job.from_flat([b"id", b"j1", b"kind", b"script", b"status", b"running", b"tag", b"t",
                       b"language", b"python3", b"scheduled_for", b"1", b"created_at", b"1"])


def test_an_odd_length_reply_is_a_bad_record() -> None:
    with pytest.raises(BadRecord):
        Job.from_flat([b"id", b"j1", b"kind"])


def test_a_stand_in_keeps_what_a_completion_needs() -> None:
    """From a damaged record: identity and attempt where readable, the claim's own values."""
    flat = flat_record(job(attempt=3, created_by="u/alice", permissioned_as="g/ops"),
                       kind=b"teleport", tag=b"\xff")
    stand_in = UnreadableJob.stand_in(flat, "why", job_id="j1", group="g2", worker="w9",
                                      claim="c0002")
    assert (stand_in.id, stand_in.group, stand_in.worker, stand_in.claim) == \
        ("j1", "g2", "w9", "c0002")
    assert (stand_in.kind, stand_in.status, stand_in.tag) == (Kind.SCRIPT, Status.RUNNING, "")
    assert (stand_in.attempt, stand_in.created_by, stand_in.permissioned_as) == \
        (3, "u/alice", "g/ops")
    assert stand_in.problem == "why"
