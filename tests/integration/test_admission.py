"""Admission of specs from every entry point: accepted jobs, and a record for every rejection."""

from __future__ import annotations

import json
import threading

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from common.errors import DuplicateJob, SpecError
from common.models import Kind, Status
from common.settings import Settings
from common.store import Store
from flows.jobs import FlowJobs
from jobs.admission import INBOX, Admission
from jobs.scripts import ScriptStore
from jobs.spec import parse_spec
from scheduler.inbox import InboxAdmitter

pytestmark = pytest.mark.cluster  # also on a Redis Cluster (tests/conftest.py)

UUID = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"


@pytest.fixture
def admission(store: Store, scripts: ScriptStore) -> Admission:
    scripts.deploy("u/alice/hello", "python3", "def main(name: str):\n    return name\n")
    return Admission(store, scripts, Settings(redis_url="redis://unused"),
                     flows=FlowJobs(store.client, store.keys))


def test_path_resolves_to_the_latest_hash(admission: Admission, scripts: ScriptStore) -> None:
    """A spec by path runs the latest version; by hash, exactly that version."""
    first = scripts.latest("u/alice/hello")
    second, new = scripts.deploy("u/alice/hello", "python3", "def main():\n    return 2\n")
    assert new and second.hash != first.hash
    by_path = admission.submit(parse_spec('{"path": "u/alice/hello"}'))
    by_hash = admission.submit(parse_spec(json.dumps({"hash": first.hash})))
    assert (by_path.kind, by_path.script_hash, by_path.script_path) == (
        Kind.SCRIPT, second.hash, "u/alice/hello")
    assert by_hash.script_hash == first.hash
    assert scripts.history("u/alice/hello") == [first.hash, second.hash]


def test_deploy_is_idempotent(scripts: ScriptStore) -> None:
    """Deploying identical content again returns the same version, not a new one."""
    version, new = scripts.deploy("u/bob/x", "bash", "echo hi")
    again, new_again = scripts.deploy("u/bob/x", "bash", "echo hi")
    assert (new, new_again, again.hash) == (True, False, version.hash)
    assert scripts.history("u/bob/x") == [version.hash]


def test_tag_routes_to_a_group(admission: Admission, redis_client: redis.Redis) -> None:
    """The tag (default: the language) picks the group through gm:routing, else `default`."""
    redis_client.hset(admission.keys.routing, "gpu", "gpu-pool")
    gpu = admission.submit(parse_spec('{"code": "x", "language": "bash", "tag": "gpu"}'))
    plain = admission.submit(parse_spec('{"code": "x", "language": "bash"}'))
    assert (gpu.tag, gpu.group, plain.tag, plain.group) == ("gpu", "gpu-pool", "bash", "default")


BAD_INPUTS = [
    (b"not json", "spec is not valid JSON"),
    (b"[1, 2, 3]", "must be a JSON object, got an array"),
    (b'{"args": {}}', "nothing to run"),
    (b'{"path": "u/alice/nope"}', "no script at path 'u/alice/nope'"),
    (b'{"hash": "0123456789abcdef"}', "no script version with hash 0123456789abcdef"),
    (b'{"code": "x", "language": "cobol"}', "unknown language 'cobol'"),
    (b'{"path": "u/alice/hello", "args": [1]}', "args: must be a JSON object, got an array"),
    (b'{"path": "u/alice/hello", "scheduled_for": "yesterday-ish"}', "is not an ISO 8601 time"),
    (b'{"flow_path": "f/x/y"}', "no flow at path 'f/x/y'"),
    (b'{"flow": {"value": {"modules": [{"id": "a", "value": {"type": "aiagent"}}]}}}', "module 'a'"),
    (b'{"flow": {"value": {"modules": []}, "schema": {"type": "object", "required": ["n"]}}}',
     "n"),
    (b'{"path": "u/alice/hello", "tag": "no spaces"}', "is not a tag"),
    (b'{"path": "u/alice/hello", "tag": "gpu\\n"}', "is not a tag"),
    (b'{"path": "u/alice/hello", "permissioned_as": "u/admin"}', "u/inbox may not run jobs as u/admin"),
    (b"\xff\xfe\x00", "spec is not valid JSON"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_INPUTS)
def test_every_bad_input_leaves_a_failure_record(
    admission: Admission, store: Store, raw: bytes, reason: str
) -> None:
    """A rejected inbox spec becomes a completed failure that says why and keeps the raw spec."""
    job_id, outcome = admission.admit_raw(raw)
    assert outcome == "rejected"
    job = store.get_job(job_id)
    assert job.status == Status.FAILURE and job.completed_at is not None
    assert job.error is not None and job.error["name"] == "InvalidSpec"
    assert reason in job.error["message"]
    assert job.raw_spec == raw.decode(errors="replace")
    assert job.created_by == "u/inbox"


def test_rejected_spec_keeps_the_producers_id(admission: Admission, store: Store) -> None:
    """A producer that chose an id finds the rejection under that id."""
    job_id, outcome = admission.admit_raw(json.dumps({"id": UUID, "path": "u/nobody/x"}).encode())
    assert (job_id, outcome) == (UUID, "rejected")
    assert store.get_job(UUID).error is not None


def test_repeated_id_from_the_inbox_is_not_run_twice(admission: Admission, store: Store) -> None:
    """The same producer id twice: one job, the second spec reported as a duplicate."""
    spec = json.dumps({"id": UUID, "path": "u/alice/hello", "args": {"name": "a"}}).encode()
    assert admission.admit_raw(spec) == (UUID, "accepted")
    assert admission.admit_raw(spec) == (UUID, "duplicate")
    with pytest.raises(DuplicateJob, match="was not enqueued again"):
        admission.submit(parse_spec(spec))


def test_tokens_need_an_identity_store(admission: Admission) -> None:
    """Without an identity store a spec token is refused rather than trusted unchecked."""
    with pytest.raises(SpecError, match="token: this instance has no identity store"):
        admission.build(parse_spec('{"path": "u/alice/hello", "token": "x"}'), principal=INBOX)


def test_inbox_admitter_takes_specs_oldest_first(
    admission: Admission, store: Store, redis_client: redis.Redis
) -> None:
    """Specs LPUSHed by any client are admitted in arrival order and leave the processing list."""
    for name in ("first", "second"):
        redis_client.lpush(store.keys.inbox, json.dumps({"path": "u/alice/hello", "args": {"name": name}}))
    admitter = InboxAdmitter(store, admission, "s1", threading.Event())
    assert admitter.admit_next(1)  # both in one batch
    assert not admitter.admit_next(0.05)
    ready = redis_client.lrange(store.keys.group("default").ready, 0, -1)
    assert [store.get_job(i.decode()).args["name"] for i in ready] == ["first", "second"]
    assert redis_client.llen(store.keys.inbox_processing("s1")) == 0


def test_specs_of_a_dead_scheduler_are_put_back(
    admission: Admission, store: Store, redis_client: redis.Redis
) -> None:
    """What a dead scheduler was admitting returns to the inbox, ahead of newer specs."""
    redis_client.lpush(store.keys.inbox, "newer")
    redis_client.rpush(store.keys.inbox_processing("dead"), "older")
    InboxAdmitter(store, admission, "s1", threading.Event()).recover("dead")
    assert redis_client.rpop(store.keys.inbox) == b"older"


def test_a_processing_list_of_before_the_upgrade_is_put_back(
    admission: Admission, store: Store, redis_client: redis.Redis
) -> None:
    """A scheduler killed before the lists were tagged for a cluster left its list under the
    old name: recovery (on a single server, where that name existed) puts it back too."""
    if store.cluster:
        pytest.skip("the old name never existed on a cluster")
    redis_client.rpush(store.keys.inbox_processing_before_cluster("dead"), "old-name")
    redis_client.rpush(store.keys.inbox_processing("dead"), "new-name")
    InboxAdmitter(store, admission, "s1", threading.Event()).recover("dead")
    # Taken from the right: the older list first.
    assert redis_client.lrange(store.keys.inbox, 0, -1) == [b"new-name", b"old-name"]
    assert not redis_client.exists(store.keys.inbox_processing_before_cluster("dead"))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
SPEC_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "path": st.sampled_from(["u/alice/hello", "u/x/none"]) | JSON_VALUES,
        "code": st.text(max_size=30) | JSON_VALUES,
        "language": st.sampled_from(["python3", "bash", "go"]) | JSON_VALUES,
        "args": JSON_VALUES,
        "scheduled_for": st.integers() | st.text(max_size=25) | JSON_VALUES,
        "id": st.uuids().map(str) | JSON_VALUES,
        "tag": JSON_VALUES,
        "priority": JSON_VALUES,
        "timeout_s": JSON_VALUES,
    },
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(JSON_VALUES, SPEC_FIELDS).map(json.dumps) | st.binary(max_size=40))
def test_any_input_yields_exactly_one_record(admission: Admission, store: Store, raw: str | bytes) -> None:
    """Whatever a client pushes, admission never raises and leaves a record (or names the duplicate)."""
    data = raw.encode() if isinstance(raw, str) else raw
    job_id, outcome = admission.admit_raw(data)
    job = store.get_job(job_id)
    if outcome == "rejected":
        assert job.status == Status.FAILURE and job.error is not None
    else:
        assert outcome in ("accepted", "duplicate")


def test_inbox_spec_with_a_token_runs_as_its_owner(store: Store, scripts: ScriptStore,
                                                   redis_client: redis.Redis) -> None:
    """A spec token makes the job run as its owner, or as a group the owner belongs to."""
    from auth.identity import IdentityStore

    identity = IdentityStore(redis_client, store.keys)
    identity.create_user("alice")
    identity.create_group("ops")
    identity.add_member("ops", "alice")
    token, _ = identity.create_token("alice")
    scripts.deploy("g/ops/report", "python3", "def main():\n    return 1\n")
    admission = Admission(store, scripts, Settings(redis_url="redis://unused"), authority=identity)
    own, outcome = admission.admit_raw(json.dumps({"code": "x", "language": "bash",
                                                   "token": token}).encode())
    assert outcome == "accepted"
    assert (store.get_job(own).created_by, store.get_job(own).permissioned_as) == ("u/alice",) * 2
    group, outcome = admission.admit_raw(json.dumps({"path": "g/ops/report", "token": token,
                                                     "permissioned_as": "g/ops"}).encode())
    assert outcome == "accepted" and store.get_job(group).permissioned_as == "g/ops"
    other, outcome = admission.admit_raw(json.dumps({"path": "g/ops/report", "token": token,
                                                     "permissioned_as": "g/admins"}).encode())
    assert outcome == "rejected"
    assert "u/alice may not run jobs as g/admins" in (store.get_job(other).error or {})["message"]
