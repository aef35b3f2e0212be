"""Who may approve a suspended flow step: signed URLs once, signed-in users by the wait's rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from auth.permissions import Principal
from common.errors import GristmillError, NotFound, PermissionDenied
from common.keys import Keys
from common.models import Job, Kind, Status
from common.store import Store
from flows.approval import sign
from flows.approvals import Approvals
from flows.expr import JsEngine
from flows.handoff import send
from flows.jobs import FlowJobs
from flows.model import parse_flow
from flows.state import JobCompleted
from flows.store import FlowStore
from tests.integration.test_flow_store import Launcher

FLOW = "5a1c0f3e-2222-4333-8444-555566667777"
SECRET = "c2VjcmV0LWtleS1vZi10aGUtdGVzdC1pbnN0YW5jZSE="
ALICE = Principal(user="alice", groups=frozenset({"ops"}))
BOB = Principal(user="bob", groups=frozenset({"dev"}))
CAROL = Principal(user="carol", groups=frozenset({"ops"}))

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def engine() -> Iterator[JsEngine]:
    e = JsEngine()
    yield e
    e.close()


def suspended_flow(redis_client: redis.Redis, keys: Keys, engine: JsEngine,
                   suspend: dict[str, Any]) -> Job:
    """alice's flow whose step ``a`` ran and now waits with ``suspend``'s rules."""
    doc = {"summary": "t", "value": {"modules": [
        {"id": "a", "value": {"type": "rawscript", "language": "python3",
                              "content": "def main():\n  return 1", "input_transforms": {}},
         "suspend": suspend},
        {"id": "b", "value": {"type": "identity"}}]}}
    job = Job(id=FLOW, kind=Kind.FLOWPREVIEW, status=Status.QUEUED, tag="flow", group="default",
              language="", scheduled_for=0, created_at=1, created_by="u/alice", permissioned_as="u/alice")
    FlowJobs(redis_client, keys).open(job, flow=parse_flow(doc))
    fs, launcher = FlowStore(redis_client, keys, engine), Launcher()
    fs.process("default", FLOW, launcher)
    (step,) = launcher.order
    send(redis_client, keys, "default", FLOW, JobCompleted(job=step, success=True, result=1))
    fs.process("default", FLOW, launcher)
    return Store(redis_client, keys).get_job(FLOW)


def events(redis_client: redis.Redis) -> list[bytes]:
    return redis_client.lrange("gm:{wg:default}:flowevents:" + FLOW, 0, -1)


def test_a_signed_url_approves_once_and_a_forged_one_never(
        redis_client: redis.Redis, keys: Keys, engine: JsEngine) -> None:
    """The URL's first use queues a Resumed event; a second use, a forgery or a late one: refused."""
    flow = suspended_flow(redis_client, keys, engine, {"required_events": 1, "timeout": 60})
    approvals = Approvals(Store(redis_client, keys), SECRET)
    assert set(approvals.waiting(flow)) == {"a"}
    url = approvals.urls(flow, "a", base_url="http://x")["resume"]
    query = dict(part.split("=") for part in url.split("?")[1].split("&"))
    expires, signature = int(query["expires"]), query["signature"]
    with pytest.raises(PermissionDenied, match="not valid"):
        approvals.by_url(FLOW, "resume", "a", nonce=query["nonce"], expires=expires, signature="0" * 64)
    with pytest.raises(PermissionDenied, match="not valid"):  # a cancel URL's signature is another
        approvals.by_url(FLOW, "cancel", "a", nonce=query["nonce"], expires=expires, signature=signature)
    approvals.by_url(FLOW, "resume", "a", nonce=query["nonce"], expires=expires, signature=signature,
                     payload={"ok": 1})
    assert len(events(redis_client)) == 1
    with pytest.raises(PermissionDenied, match="used already"):
        approvals.by_url(FLOW, "resume", "a", nonce=query["nonce"], expires=expires, signature=signature)
    late = sign(SECRET.encode(), FLOW, "a", "n2", "resume", 10)
    with pytest.raises(PermissionDenied, match="not valid"):
        approvals.by_url(FLOW, "resume", "a", nonce="n2", expires=10, signature=late)
    with pytest.raises(NotFound, match="not waiting"):
        approvals.urls(flow, "b", base_url="http://x")


def test_signed_in_approvers_follow_the_wait_rules(
        redis_client: redis.Redis, keys: Keys, engine: JsEngine) -> None:
    """Self-approval disabled: not alice (the creator); groups required: not bob; carol of ops may."""
    flow = suspended_flow(redis_client, keys, engine, {
        "required_events": 1, "timeout": 60, "self_approval_disabled": True,
        "user_groups_required": {"type": "static", "value": ["ops"]}})
    approvals = Approvals(Store(redis_client, keys), SECRET)
    url = approvals.urls(flow, "a", base_url="http://x")["resume"]
    query = dict(part.split("=") for part in url.split("?")[1].split("&"))
    with pytest.raises(PermissionDenied, match="signed-in approver"):
        approvals.by_url(FLOW, "resume", "a", nonce=query["nonce"], expires=int(query["expires"]),
                         signature=query["signature"])
    with pytest.raises(PermissionDenied, match="creator"):
        approvals.by_user(flow, "a", ALICE, approved=True)
    with pytest.raises(PermissionDenied, match="members of ops"):
        approvals.by_user(flow, "a", BOB, approved=True)
    assert events(redis_client) == []
    approvals.by_user(flow, "a", CAROL, approved=False)
    (event,) = events(redis_client)
    assert b'"approved":false' in event and b'"approver":"u/carol"' in event


def test_no_secret_no_urls(redis_client: redis.Redis, keys: Keys, engine: JsEngine) -> None:
    """Without GRISTMILL_SECRET_KEY the URLs cannot be made, and the error says what to set."""
    flow = suspended_flow(redis_client, keys, engine, {"required_events": 1})
    with pytest.raises(GristmillError, match="GRISTMILL_SECRET_KEY"):
        Approvals(Store(redis_client, keys), None).urls(flow, "a", base_url="http://x")
