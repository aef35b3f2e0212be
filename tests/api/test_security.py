"""Escalation attempts that must be refused, each with the refusal it gets and proof nothing happened.

The cast (see conftest): admin; alice in group ops; bob in group dev; carol in
no group. Each test's docstring names the attack. Every test asserts the exact
status, that the message names the problem, and that nothing was done: no job
enqueued, nothing written, nothing revealed.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from common.models import Status
from common.queries import list_jobs
from jobs.admission import Admission
from tests.api.conftest import HOUR_MS, Api
from worker.worker import Worker

SECRET = "s3cr3t-value-of-alice"


@pytest.fixture
def alice_things(api: Api) -> Api:
    """alice's script, plain variable, secret and resource; a script of group ops."""
    api.script("u/alice/echo", who="alice")
    api.script("g/ops/echo", who="alice")
    api.variable("u/alice/color", "blue", who="alice")
    api.variable("u/alice/token", SECRET, secret=True, who="alice")
    answer = api.post("/api/resources", "alice", json={
        "path": "u/alice/db", "resource_type": "postgresql", "value": {"password": "pw-of-alice"}})
    assert answer.status_code == 201
    return api


def refused(answer: Any, status: int, *words: str) -> str:
    """Assert the status and that the JSON error names every word; the message."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    message: str = answer.json()["error"]
    for word in words:
        assert word in message, (word, message)
    return message


# -- permissioned_as ----------------------------------------------------------------------------


@pytest.mark.parametrize("identity", ["g/dev", "u/bob", "u/admin"])
def test_run_as_an_identity_one_is_not(alice_things: Api, identity: str) -> None:
    """alice runs a job as a group she is not in, as another user, as the admin."""
    api = alice_things
    for url, body in (("/api/jobs/run/p/u/alice/echo", {}),
                      ("/api/jobs/run/preview", {"code": "x", "language": "python3"})):
        answer = api.post(url, "alice", json=body, params={"permissioned_as": identity})
        refused(answer, 403, "u/alice may not run jobs as " + identity)
    assert api.job_count() == 0


@pytest.mark.parametrize("identity", [
    "admin", "u/", "u/Admin", "x/alice", "u/alice/../admin", "g/ops,u/admin", "u/admin ",
    "u/*", "g/", "u/inbox/..", " u/alice",
])
def test_malformed_permissioned_as(alice_things: Api, identity: str) -> None:
    """A permissioned_as that is no identity (wildcards, traversal, padding) is refused."""
    answer = alice_things.post("/api/jobs/run/p/u/alice/echo", "alice", json={},
                               params={"permissioned_as": identity})
    refused(answer, 403, "may not run jobs as")
    assert alice_things.job_count() == 0


def test_run_as_own_group_that_cannot_run_the_script(alice_things: Api) -> None:
    """bob runs ops's script as his own group dev, which has no run permission on it."""
    api = alice_things
    refused(api.post("/api/jobs/run/p/g/ops/echo", "bob", json={},
                     params={"permissioned_as": "g/dev"}), 403, "g/dev may not run g/ops/echo")
    assert api.job_count() == 0


# -- run permission ----------------------------------------------------------------------------


def test_run_a_script_without_run_permission_by_path_and_hash(alice_things: Api) -> None:
    """carol runs alice's script by path, by hash, and waiting for its result."""
    api = alice_things
    digest = api.get("/api/scripts/p/u/alice/echo", "alice").json()["hash"]
    for url in ("/api/jobs/run/p/u/alice/echo", f"/api/jobs/run/h/{digest}",
                "/api/jobs/run_wait_result/p/u/alice/echo", f"/api/jobs/run_wait_result/h/{digest}"):
        refused(api.post(url, "carol", json={}), 403, "u/carol may not run u/alice/echo")
    assert api.job_count() == 0


def test_a_read_grant_does_not_allow_running(alice_things: Api) -> None:
    """bob, granted only read on alice's script, tries to run it."""
    api = alice_things
    api.post("/api/grants", "alice", json={"path": "u/alice/echo", "identity": "u/bob",
                                            "level": "read"})
    assert api.get("/api/scripts/p/u/alice/echo", "bob").status_code == 200
    refused(api.post("/api/jobs/run/p/u/alice/echo", "bob", json={}), 403,
            "u/bob may not run u/alice/echo")
    assert api.job_count() == 0


def test_schedule_a_script_one_cannot_run(alice_things: Api) -> None:
    """bob schedules alice's script under his own path, so that it would run as him every minute."""
    api = alice_things
    answer = api.post("/api/schedules", "bob", json={
        "path": "u/bob/steal", "script_path": "u/alice/echo", "cron": "* * * * *"})
    refused(answer, 403, "u/bob may not run u/alice/echo")
    assert api.get("/api/schedules").json() == []
    assert api.job_count() == 0


def test_schedule_under_another_users_path(alice_things: Api) -> None:
    """bob creates a schedule at alice's path (running a script he may run)."""
    api = alice_things
    api.script("u/bob/mine", who="bob")
    answer = api.post("/api/schedules", "bob", json={
        "path": "u/alice/nightly", "script_path": "u/bob/mine", "cron": "* * * * *"})
    refused(answer, 403, "u/bob may not write u/alice/nightly")
    assert api.get("/api/schedules").json() == []


def test_pause_or_delete_another_users_schedule(alice_things: Api) -> None:
    """bob pauses and deletes alice's schedule."""
    api = alice_things
    assert api.post("/api/schedules", "alice", json={
        "path": "u/alice/nightly", "script_path": "u/alice/echo", "cron": "0 3 * * *"}
    ).status_code == 201
    for action in ("pause", "delete"):
        refused(api.post(f"/api/schedules/{action}/u/alice/nightly", "bob"), 403,
                "u/bob may not write u/alice/nightly")
    schedule = api.get("/api/schedules/u/alice/nightly", "alice").json()
    assert schedule["paused"] is False


# -- variables, secrets, resources, scripts ----------------------------------------------------


def test_read_another_users_variable_and_secret(alice_things: Api) -> None:
    """bob reads alice's variable, her secret and the secret's metadata."""
    api = alice_things
    for path in ("u/alice/color", "u/alice/token"):
        refused(api.get(f"/api/variables/{path}", "bob"), 403, f"u/bob may not read {path}")
        refused(api.get(f"/api/variables/meta/{path}", "bob"), 403, f"u/bob may not read {path}")
    refused(api.get("/api/resources/u/alice/db", "bob"), 403, "u/bob may not read u/alice/db")


def test_list_variables_shows_neither_others_nor_any_secret_value(alice_things: Api) -> None:
    """bob lists variables and resources; admin lists them: no secret value appears anywhere."""
    api = alice_things
    api.variable("u/bob/mine", "bobs", who="bob")
    mine = api.get("/api/variables", "bob")
    assert [v["path"] for v in mine.json()] == ["u/bob/mine"]
    assert "alice" not in mine.text
    assert api.get("/api/resources", "bob").json() == []
    everything = api.get("/api/variables", "admin")
    assert {v["path"] for v in everything.json()} == {"u/alice/color", "u/alice/token", "u/bob/mine"}
    assert SECRET not in everything.text
    assert next(v for v in everything.json() if v["path"] == "u/alice/token")["value"] is None


def test_write_or_delete_another_users_variable(alice_things: Api) -> None:
    """bob overwrites alice's secret, creates a variable at her path, deletes her variable."""
    api = alice_things
    for body in ({"path": "u/alice/token", "value": "bobs now"},
                 {"path": "u/alice/new", "value": "planted", "is_secret": False}):
        refused(api.post("/api/variables", "bob", json=body), 403,
                f"u/bob may not write {body['path']}")
    refused(api.delete("/api/variables/u/alice/color", "bob"), 403,
            "u/bob may not write u/alice/color")
    refused(api.post("/api/resources", "bob", json={
        "path": "u/alice/db", "resource_type": "postgresql", "value": {"host": "evil"}}), 403,
        "u/bob may not write u/alice/db")
    assert api.get("/api/variables/u/alice/token", "alice").json() == SECRET
    assert api.get("/api/variables/u/alice/color", "alice").json() == "blue"
    assert api.get("/api/variables/u/alice/new", "alice").status_code == 404
    assert api.get("/api/resources/u/alice/db", "alice").json()["value"] == {"password": "pw-of-alice"}


def test_create_a_script_under_another_users_path(alice_things: Api) -> None:
    """bob deploys a new version of alice's script (she would then run his code)."""
    api = alice_things
    before = api.get("/api/scripts/history/u/alice/echo", "alice").json()
    for path in ("u/alice/echo", "u/alice/new", "g/ops/echo"):
        refused(api.post("/api/scripts", "bob", json={
            "path": path, "code": "def main():\n    return 'pwned'\n", "language": "python3"}),
            403, f"u/bob may not write {path}")
    assert api.get("/api/scripts/history/u/alice/echo", "alice").json() == before
    assert api.get("/api/scripts/p/u/alice/new", "alice").status_code == 404


def test_read_another_users_script(alice_things: Api) -> None:
    """bob reads alice's script by path, by hash and its history: it looks absent to him."""
    api = alice_things
    digest = api.get("/api/scripts/p/u/alice/echo", "alice").json()["hash"]
    for url in ("/api/scripts/p/u/alice/echo", f"/api/scripts/h/{digest}",
                "/api/scripts/history/u/alice/echo"):
        refused(api.get(url, "bob"), 404, "no script")
    assert "u/alice" not in api.get("/api/scripts", "bob").text


# -- other users' jobs -------------------------------------------------------------------------


def test_read_another_users_job_result_and_logs(alice_things: Api) -> None:
    """bob reads alice's job, its result, its logs and follows them: to him it does not exist."""
    api = alice_things
    job_id = api.run("u/alice/echo", {"x": 1}, who="alice")
    for url, params in ((f"/api/jobs/{job_id}", {}), (f"/api/jobs/{job_id}/result", {}),
                        (f"/api/jobs/{job_id}/logs", {}), (f"/api/jobs/{job_id}/logs",
                                                           {"follow": 1})):
        refused(api.get(url, "bob", params=params), 404, f"no job {job_id}")


def test_cancel_another_users_job(alice_things: Api) -> None:
    """bob cancels alice's queued job."""
    api = alice_things
    job_id = api.run("u/alice/echo", who="alice")
    refused(api.post(f"/api/jobs/{job_id}/cancel", "bob", json={"reason": "mine now"}), 404,
            f"no job {job_id}")
    assert api.job(job_id).status == Status.QUEUED


def test_list_others_jobs(alice_things: Api) -> None:
    """bob lists jobs, filtering on alice as creator and on her script's path: he sees none."""
    api = alice_things
    api.run("u/alice/echo", who="alice")
    api.run("g/ops/echo", who="alice", permissioned_as="g/ops")
    for query in ({}, {"created_by": "u/alice"}, {"path": "u/alice/echo"}, {"group": "default"}):
        assert api.get("/api/jobs", "bob", params=query).json() == []
    assert len(api.get("/api/jobs", "admin").json()) == 2


# -- job tokens (WM_TOKEN) ---------------------------------------------------------------------


def test_job_token_of_bob_reads_alices_secret(alice_things: Api) -> None:
    """A job run as u/bob uses its WM_TOKEN to read alice's secret; nothing is marked for redaction."""
    api = alice_things
    job_id, token = api.running_job("u/bob", who="bob")
    refused(api.get("/api/variables/u/alice/token", token), 403,
            "u/bob may not read u/alice/token")
    job = api.job(job_id)
    assert api.services.redis.exists(api.services.keys.group(job.group).redact(job_id)) == 0


def test_group_job_token_reads_a_members_secret(alice_things: Api) -> None:
    """A job run as g/ops (alice is a member) reads alice's personal secret: the group is not alice."""
    api = alice_things
    _, token = api.running_job("g/ops", who="alice")
    refused(api.get("/api/variables/u/alice/token", token), 403,
            "g/ops may not read u/alice/token")
    assert [v["path"] for v in api.get("/api/variables", token).json()] == []


def test_job_token_after_its_job_completed(alice_things: Api) -> None:
    """A WM_TOKEN used after its job completed (revocation missed): 401, nothing read."""
    api = alice_things
    job_id, token = api.running_job("u/alice", who="alice")
    assert api.get("/api/variables/u/alice/color", token).json() == "blue"
    api.finish(job_id)
    refused(api.get("/api/variables/u/alice/color", token), 401, "its job has completed")
    refused(api.post("/api/jobs/run/p/u/alice/echo", token, json={}), 401, "its job has completed")
    assert api.job_count() == 1


def test_job_token_after_revocation(alice_things: Api) -> None:
    """A WM_TOKEN used after the worker revoked it: 401."""
    api = alice_things
    job_id, token = api.running_job("u/alice", who="alice")
    api.services.identity.revoke_job_token(job_id)
    refused(api.get("/api/variables/u/alice/color", token), 401, "unknown or revoked token")


def test_job_token_of_an_earlier_attempt_is_replayed(alice_things: Api) -> None:
    """The WM_TOKEN of attempt 1 is replayed while attempt 2 (with a fresh token) runs."""
    api = alice_things
    job_id, first = api.running_job("u/alice", who="alice")
    second = api.job_token(job_id, "u/alice")
    refused(api.get("/api/variables/u/alice/color", first), 401, "unknown or revoked token")
    assert api.get("/api/variables/u/alice/color", second).json() == "blue"


def test_job_token_past_its_expiry(alice_things: Api) -> None:
    """A WM_TOKEN used after its expiry (timeout + margin) while the job still looks running."""
    api = alice_things
    _, token = api.running_job("u/alice", who="alice")
    now = api.services.identity.clock()
    api.services.identity.clock = lambda: now + 2 * HOUR_MS
    refused(api.get("/api/variables/u/alice/color", token), 401, "token expired")


def test_wm_token_of_a_job_the_worker_ran_is_revoked(
        alice_things: Api, worker: Worker, job_share: Path) -> None:
    """A job leaks its WM_TOKEN (signed for its attempt) to a file; once it completes the
    token is refused (401)."""
    api = alice_things
    leak = job_share / "leaked-token"
    code = ("import os\ndef main(out: str):\n"
            "    open(out, 'w').write(os.environ['WM_TOKEN'])\n    return 'done'\n")
    job_id = api.post("/api/jobs/run/preview", "alice", json={
        "code": code, "language": "python3", "args": {"out": str(leak)}}).text
    assert api.services.store.wait(job_id, 60).status == Status.SUCCESS
    token = leak.read_text()
    assert token.startswith("gmj_")
    refused(api.get("/api/whoami", token), 401, "its job has completed")
    refused(api.get("/api/variables/u/alice/color", token), 401)


def test_job_token_mints_an_api_token(alice_things: Api) -> None:
    """A job uses its WM_TOKEN to mint a long-lived API token (or list or revoke them)."""
    api = alice_things
    _, token = api.running_job("u/alice", who="alice")
    refused(api.post("/api/tokens", token, json={"label": "forever"}), 403,
            "a job token cannot do this")
    refused(api.get("/api/tokens", token), 403, "a job token cannot do this")
    token_id = api.services.identity.list_tokens("alice")[0].token_id
    refused(api.delete(f"/api/tokens/{token_id}", token), 403, "a job token cannot do this")
    assert [t.label for t in api.services.identity.list_tokens("alice")] == ["tests"]


def test_admin_job_token_manages_identities(alice_things: Api) -> None:
    """A job run as u/admin uses its WM_TOKEN to create an admin user, a group, a membership."""
    api = alice_things
    _, token = api.running_job("u/admin")
    refused(api.post("/api/users", token, json={"name": "mallory", "is_admin": True}), 403,
            "a job token cannot do this")
    refused(api.post("/api/groups/evil", token), 403, "a job token cannot do this")
    refused(api.post("/api/groups/ops/members", token, json={"user": "carol"}), 403,
            "a job token cannot do this")
    refused(api.delete("/api/users/bob", token), 403, "a job token cannot do this")
    assert "mallory" not in [u.name for u in api.services.identity.list_users()]
    assert api.services.identity.list_groups() == {"dev": ["bob"], "ops": ["alice"]}


def test_job_token_grants_or_makes_folders(alice_things: Api) -> None:
    """A job uses its WM_TOKEN to grant bob write on alice's script and to create a folder."""
    api = alice_things
    _, token = api.running_job("u/alice", who="alice")
    refused(api.post("/api/grants", token, json={"path": "u/alice/echo", "identity": "u/bob",
                                                  "level": "write"}), 403,
            "a job token cannot do this")
    refused(api.post("/api/folders/stash", token), 403, "a job token cannot do this")
    assert api.services.identity.get_acl("u/alice/echo").extra == {}
    assert api.services.identity.get_folder("stash") is None


def test_group_job_starts_a_child_as_a_member(alice_things: Api) -> None:
    """A job run as g/ops starts a child as u/alice (a member): never wider, refused."""
    api = alice_things
    parent, token = api.running_job("g/ops", who="alice")
    refused(api.post("/api/jobs/run/p/g/ops/echo", token, json={},
                     params={"permissioned_as": "u/alice"}), 403,
            "g/ops may not run jobs as u/alice")
    refused(api.post("/api/jobs/run/preview", token, json={"code": "x", "language": "python3"},
                     params={"permissioned_as": "u/admin"}), 403, "g/ops may not run jobs as u/admin")
    assert api.job_count() == 1
    # Without permissioned_as the child inherits the job's identity, exactly.
    child = api.post("/api/jobs/run/p/g/ops/echo", token, json={}).text
    record = api.job(child)
    assert (record.permissioned_as, record.created_by, record.parent_job) == ("g/ops", "g/ops", parent)


def test_job_token_runs_a_script_its_identity_cannot(alice_things: Api) -> None:
    """A job run as u/bob starts alice's script as a child (by path and by hash)."""
    api = alice_things
    _, token = api.running_job("u/bob", who="bob")
    digest = api.get("/api/scripts/p/u/alice/echo", "alice").json()["hash"]
    for url in ("/api/jobs/run/p/u/alice/echo", f"/api/jobs/run/h/{digest}"):
        refused(api.post(url, token, json={}), 403, "u/bob may not run u/alice/echo")
    assert api.job_count() == 1


def test_job_token_reads_another_job(alice_things: Api) -> None:
    """A job run as u/bob reads alice's job record and result through its WM_TOKEN."""
    api = alice_things
    alices = api.run("u/alice/echo", who="alice")
    _, token = api.running_job("u/bob", who="bob")
    refused(api.get(f"/api/jobs/{alices}", token), 404, f"no job {alices}")
    refused(api.get(f"/api/jobs/{alices}/result", token), 404, f"no job {alices}")
    assert alices not in api.get("/api/jobs", token).text


# -- API tokens --------------------------------------------------------------------------------


def test_expired_api_token(alice_things: Api) -> None:
    """alice's token is used after its expiry: 401 naming expiry, and no job is run."""
    api = alice_things
    now = api.services.identity.clock()
    token = api.services.identity.create_token("alice", expires_at=now + HOUR_MS)[0]
    assert api.get("/api/whoami", token).status_code == 200
    api.services.identity.clock = lambda: now + 2 * HOUR_MS
    refused(api.post("/api/jobs/run/p/u/alice/echo", token, json={}), 401, "token expired")
    assert api.job_count() == 0


def test_revoked_api_token(alice_things: Api) -> None:
    """alice's token is used after she revoked it: 401, and no job is run."""
    api = alice_things
    token, info = api.services.identity.create_token("alice", label="laptop")
    assert api.delete(f"/api/tokens/{info.token_id}", "alice").status_code == 200
    refused(api.post("/api/jobs/run/p/u/alice/echo", token, json={}), 401, "unknown or revoked")
    assert api.job_count() == 0


def test_revoke_another_users_token(alice_things: Api) -> None:
    """bob revokes alice's token by its id: not his, so not found, and it keeps working."""
    api = alice_things
    info = api.services.identity.list_tokens("alice")[0]
    refused(api.delete(f"/api/tokens/{info.token_id}", "bob"), 404, "has no token")
    assert api.get("/api/whoami", "alice").status_code == 200


def one_char_off(token: str) -> str:
    last = "A" if token[-1] != "A" else "B"
    return token[:-1] + last


@pytest.mark.parametrize("forge", [
    lambda t: "", lambda t: "garbage", lambda t: "gm_", lambda t: "gm_" + "A" * 43,
    one_char_off, lambda t: t.upper(), lambda t: t + "x", lambda t: t[:-1],
    lambda t: t[:10] + " " + t[10:], lambda t: "gm_" + "a" * 5000, lambda t: t.removeprefix("gm_"),
    lambda t: "../" + t,
], ids=["empty", "garbage", "prefix-only", "right-shape", "one-char-off", "uppercased",
        "one-char-more", "one-char-less", "inner-space", "huge", "no-prefix", "path-like"])
def test_forged_bearer_tokens(alice_things: Api, forge: Any) -> None:
    """Empty, garbage, right-shaped, near-miss and oversized bearer tokens are all 401."""
    api = alice_things
    forged = forge(api.tokens["alice"])
    answer = api.client.post("/api/jobs/run/p/u/alice/echo", json={},
                             headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401
    assert "token" in answer.json()["error"]
    assert api.job_count() == 0


def test_token_of_a_deleted_then_recreated_user(alice_things: Api) -> None:
    """A token of a deleted user 'dave' does not work for a new user of the same name."""
    api = alice_things
    api.services.identity.create_user("dave")
    token = api.services.identity.create_token("dave")[0]
    api.services.identity.delete_user("dave")
    refused(api.get("/api/whoami", token), 401, "unknown or revoked")
    api.services.identity.create_user("dave")
    refused(api.get("/api/whoami", token), 401)


def test_disabled_user_token(alice_things: Api) -> None:
    """A disabled user's token (and the jobs run as him) stop authenticating."""
    api = alice_things
    _, job_token = api.running_job("u/alice", who="alice")
    api.services.identity.set_disabled("alice", True)
    refused(api.post("/api/jobs/run/p/u/alice/echo", "alice", json={}), 401, "disabled")
    refused(api.get("/api/variables/u/alice/color", job_token), 401, "disabled")
    assert api.job_count() == 1


# -- path traversal ----------------------------------------------------------------------------

BAD_PATHS = ["u/alice/../bob/x", "u/alice/..", "/u/bob/x", "u\\bob\\x", "u/alice/./x",
             "u/alice//x", "u/bob/x/..", "../u/bob/x", "u/alice/x\x00", "u/alice/%2e%2e"]
URL_BAD_PATHS = ["u/alice/%2e%2e/bob/x", "u/alice/%2E%2E", "%2Fu/bob/x", "u%5Cbob%5Cx",
                 "u/alice/%2e/x", "u/bob/x/%2e%2e"]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_path_traversal_in_bodies(alice_things: Api, path: str) -> None:
    """bob writes a script, variable, resource, schedule or grant at a traversing path."""
    api = alice_things
    api.script("u/bob/mine", who="bob")
    bodies = [
        ("/api/scripts", {"path": path, "code": "def main():\n    return 1\n", "language": "python3"}),
        ("/api/variables", {"path": path, "value": "x"}),
        ("/api/resources", {"path": path, "resource_type": "t", "value": {}}),
        ("/api/schedules", {"path": path, "script_path": "u/bob/mine", "cron": "* * * * *"}),
        ("/api/schedules", {"path": "u/bob/s", "script_path": path, "cron": "* * * * *"}),
        ("/api/grants", {"path": path, "identity": "u/bob", "level": "write"}),
    ]
    for url, body in bodies:
        refused(api.post(url, "bob", json=body), 400, "bad path")
    assert {v["path"] for v in api.get("/api/variables").json()} == {"u/alice/color",
                                                                      "u/alice/token"}
    assert [r["path"] for r in api.get("/api/resources").json()] == ["u/alice/db"]
    assert api.services.identity.get_acl("u/bob/mine").extra == {}
    assert [s["path"] for s in api.get("/api/scripts").json()] == [
        "g/ops/echo", "u/alice/echo", "u/bob/mine"]
    assert api.get("/api/schedules").json() == []


@pytest.mark.parametrize("path", URL_BAD_PATHS)
def test_path_traversal_in_urls(alice_things: Api, path: str) -> None:
    """bob reaches alice's items through encoded '..', '.', slashes and backslashes in URLs."""
    api = alice_things
    for method, url in (
        ("POST", f"/api/jobs/run/p/{path}"), ("POST", f"/api/jobs/run_wait_result/p/{path}"),
        ("GET", f"/api/scripts/p/{path}"), ("GET", f"/api/scripts/history/{path}"),
        ("GET", f"/api/variables/{path}"), ("GET", f"/api/variables/meta/{path}"),
        ("DELETE", f"/api/variables/{path}"), ("GET", f"/api/resources/{path}"),
        ("DELETE", f"/api/resources/{path}"), ("GET", f"/api/schedules/{path}"),
        ("POST", f"/api/schedules/delete/{path}"),
    ):
        answer = api.client.request(method, url, headers=api.auth("bob"), json={})
        # Runs look the path up first: "no script at path ..." is their refusal.
        refused(answer, 400, "bad path" if "/run" not in url else "no script at path")
    assert api.job_count() == 0
    assert api.get("/api/variables/u/alice/color", "alice").json() == "blue"


@pytest.mark.parametrize("job_id", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "*", "%00"])
def test_path_traversal_in_job_ids(alice_things: Api, job_id: str) -> None:
    """bob uses globbing or traversal in a job id: no such job."""
    api = alice_things
    api.run("u/alice/echo", who="alice")
    for suffix in ("", "/result", "/logs"):
        assert api.get(f"/api/jobs/{job_id}{suffix}", "bob").status_code == 404
    assert api.post(f"/api/jobs/{job_id}/cancel", "bob").status_code == 404
    assert api.get("/api/jobs", "alice").json()[0]["status"] == "queued"


# -- admin-only operations ---------------------------------------------------------------------


def test_non_admin_creates_users_or_groups(alice_things: Api) -> None:
    """alice creates an admin user and a group, lists and deletes users."""
    api = alice_things
    refused(api.post("/api/users", "alice", json={"name": "mallory", "is_admin": True}), 403,
            "u/alice is not an admin")
    refused(api.post("/api/groups/evil", "alice"), 403, "u/alice is not an admin")
    refused(api.get("/api/users", "alice"), 403, "u/alice is not an admin")
    refused(api.delete("/api/users/bob", "alice"), 403, "u/alice is not an admin")
    refused(api.delete("/api/groups/dev", "alice"), 403, "u/alice is not an admin")
    assert [u.name for u in api.services.identity.list_users()] == [
        "admin", "alice", "bob", "carol"]
    assert set(api.services.identity.list_groups()) == {"dev", "ops"}


def test_non_admin_adds_himself_to_a_group(alice_things: Api) -> None:
    """carol adds herself to ops (to run as g/ops), and bob removes alice from it."""
    api = alice_things
    refused(api.post("/api/groups/ops/members", "carol", json={"user": "carol"}), 403,
            "u/carol is not an admin")
    refused(api.delete("/api/groups/ops/members/alice", "bob"), 403, "u/bob is not an admin")
    assert api.services.identity.list_groups()["ops"] == ["alice"]
    refused(api.post("/api/jobs/run/p/g/ops/echo", "carol", json={},
                     params={"permissioned_as": "g/ops"}), 403, "may not run jobs as g/ops")


def test_non_admin_changes_settings(alice_things: Api) -> None:
    """bob shortens the retention period (to erase evidence)."""
    api = alice_things
    refused(api.put("/api/settings/retention_s", "bob", params={"value": "1"}), 403,
            "u/bob is not an admin")
    assert api.get("/api/settings", "bob").json()["retention_s"] == 2_592_000


def test_grant_on_a_path_one_cannot_write(alice_things: Api) -> None:
    """bob grants himself write on alice's script, and on a group path he is not in."""
    api = alice_things
    for path in ("u/alice/echo", "g/ops/echo"):
        refused(api.post("/api/grants", "bob", json={"path": path, "identity": "u/bob",
                                                      "level": "write"}), 403,
                f"u/bob may not write {path}")
        assert api.services.identity.get_acl(path).extra == {}


def test_join_another_users_folder(alice_things: Api) -> None:
    """bob makes himself a writer of alice's folder."""
    api = alice_things
    assert api.post("/api/folders/private", "alice").status_code == 201
    refused(api.post("/api/folders/private/members", "bob",
                     params={"identity": "u/bob", "role": "writer"}), 403,
            "u/bob may not manage folder private")
    folder = api.services.identity.get_folder("private")
    assert folder is not None and folder.writers == frozenset({"u/alice"})


# -- the inbox ---------------------------------------------------------------------------------


def admit(api: Api, spec: dict[str, Any]) -> tuple[str, str]:
    """LPUSH-style admission of a raw spec, as the scheduler does it."""
    admission: Admission = api.services.admission
    return admission.admit_raw(json.dumps(spec).encode())


def rejected(api: Api, spec: dict[str, Any], *words: str) -> None:
    """The spec became a failure record whose error names every word; nothing was queued."""
    job_id, outcome = admit(api, spec)
    assert outcome == "rejected"
    job = api.job(job_id)
    assert job.status == Status.FAILURE and job.error is not None
    assert job.error["name"] == "InvalidSpec"
    for word in words:
        assert word in job.error["message"], (word, job.error["message"])
    # The raw spec is kept, its token redacted (issue 8).
    kept = {**spec, "token": "[redacted]"} if "token" in spec else spec
    assert job.raw_spec is not None and json.loads(job.raw_spec) == kept
    queued = list_jobs(api.services.store, status=Status.QUEUED)
    assert queued == []


@pytest.mark.parametrize("token", ["garbage", "gm_" + "Q" * 43, ""])
def test_inbox_spec_with_a_forged_token(alice_things: Api, token: str) -> None:
    """An inbox spec carries a garbage or right-shaped but unknown token."""
    rejected(alice_things, {"path": "u/alice/echo", "token": token}, "token:", "unknown or revoked")


def test_inbox_spec_with_an_expired_token(alice_things: Api) -> None:
    """An inbox spec carries alice's token after it expired."""
    api = alice_things
    now = api.services.identity.clock()
    token = api.services.identity.create_token("alice", expires_at=now + HOUR_MS)[0]
    api.services.identity.clock = lambda: now + 2 * HOUR_MS
    rejected(api, {"path": "u/alice/echo", "token": token}, "token:", "token expired")


def test_inbox_spec_with_a_stolen_revoked_token(alice_things: Api) -> None:
    """An inbox spec carries a token alice revoked after it leaked."""
    api = alice_things
    token, info = api.services.identity.create_token("alice")
    api.services.identity.revoke_token("alice", info.token_id)
    rejected(api, {"path": "u/alice/echo", "token": token}, "token:", "unknown or revoked")


def test_inbox_spec_without_token_as_admin(alice_things: Api) -> None:
    """A tokenless inbox spec names permissioned_as u/admin (or alice, or a group)."""
    for identity in ("u/admin", "u/alice", "g/ops"):
        rejected(alice_things, {"path": "u/alice/echo", "permissioned_as": identity},
                 f"u/inbox may not run jobs as {identity}")


def test_inbox_spec_with_a_token_as_a_foreign_group(alice_things: Api) -> None:
    """An inbox spec with bob's token asks to run as g/ops, which bob is not in."""
    api = alice_things
    rejected(api, {"path": "g/ops/echo", "token": api.tokens["bob"], "permissioned_as": "g/ops"},
             "u/bob may not run jobs as g/ops")


def test_inbox_spec_with_a_token_runs_a_script_it_cannot(alice_things: Api) -> None:
    """An inbox spec with carol's token runs alice's script."""
    api = alice_things
    rejected(api, {"path": "u/alice/echo", "token": api.tokens["carol"]},
             "u/carol may not run u/alice/echo")


def test_inbox_spec_with_the_token_of_a_completed_job(alice_things: Api) -> None:
    """An inbox spec carries the WM_TOKEN of a job that completed without its token revoked."""
    api = alice_things
    job_id, token = api.running_job("u/alice", who="alice")
    api.finish(job_id)  # e.g. failed as WorkerLost by the scheduler: nobody revoked the token
    rejected(api, {"path": "u/alice/echo", "token": token}, "token:", "completed")


def test_inbox_job_reads_variables(alice_things: Api) -> None:
    """A job of a tokenless inbox spec (u/inbox) reads any variable, even one under u/inbox/."""
    api = alice_things
    api.variable("u/inbox/planted", "x")
    job_id, outcome = admit(api, {"code": "def main():\n    return 1\n", "language": "python3"})
    assert outcome == "accepted" and api.job(job_id).permissioned_as == "u/inbox"
    token = api.job_token(job_id, "u/inbox")
    for path in ("u/alice/token", "u/alice/color", "u/inbox/planted"):
        refused(api.get(f"/api/variables/{path}", token), 403, f"u/inbox may not read {path}")
    refused(api.post("/api/variables", token, json={"path": "u/inbox/x", "value": "v"}), 403,
            "u/inbox may not write u/inbox/x")
    assert api.get("/api/variables", token).json() == []
    assert api.get("/api/resources", token).json() == []


def test_a_job_id_of_another_user_cannot_be_taken(alice_things: Api) -> None:
    """bob submits a job with the id of alice's job: 409, and her job is untouched."""
    api = alice_things
    api.script("u/bob/mine", who="bob")
    chosen = str(uuid.uuid4())
    api.run("u/alice/echo", {"x": 1}, who="alice", job_id=chosen)
    refused(api.post("/api/jobs/run/p/u/bob/mine", "bob", json={"x": 2},
                     params={"job_id": chosen}), 409, "already exists")
    job = api.job(chosen)
    assert (job.created_by, job.args) == ("u/alice", {"x": 1})


# -- roles -------------------------------------------------------------------------------------


@pytest.fixture
def operator(api: Api) -> Api:
    """olga, an operator, may run f/ops/echo (a folder grant) and nothing written by herself."""
    answer = api.post("/api/users", json={"name": "olga", "role": "operator"})
    assert answer.status_code == 201 and answer.json()["role"] == "operator", answer.text
    api.tokens["olga"] = api.services.identity.create_token("olga", label="roles")[0]
    api.services.identity.create_folder("ops", owner="u/admin")
    api.services.identity.set_grant("f/ops/echo", "u/olga", "run")
    api.script("f/ops/echo")
    return api


def test_an_operator_may_not_run_raw_code(operator: Api) -> None:
    """Previews (run and run_wait_result) are refused with 403 naming the role; nothing queued."""
    api = operator
    before = api.job_count()
    body = {"code": "def main():\n    return 1\n", "language": "python3"}
    for url in ("/api/jobs/run/preview", "/api/jobs/run_wait_result/preview"):
        refused(api.post(url, "olga", json=body), 403, "u/olga", "operator role", "raw code")
    assert api.job_count() == before


def test_an_operator_may_not_deploy_even_at_her_own_path(operator: Api) -> None:
    """A deploy, even under u/olga/ which she owns, is refused with 403 naming the role."""
    refused(operator.post("/api/scripts", "olga", json={
        "path": "u/olga/mine", "code": "def main():\n    return 1\n", "language": "python3"}),
        403, "operator role", "deploy")


def test_an_operator_runs_what_she_may_run(operator: Api) -> None:
    """A deployed script she has run permission on: accepted, as herself."""
    job_id = operator.run("f/ops/echo", {"x": 2}, who="olga")
    assert operator.job(job_id).permissioned_as == "u/olga"


def test_an_operators_job_cannot_run_raw_code_with_its_token(operator: Api) -> None:
    """A job olga started, run as a group a developer might own: its WM_TOKEN gets no previews."""
    api = operator
    api.services.identity.add_member("ops", "olga")
    api.services.identity.set_grant("f/ops/echo", "g/ops", "run")
    job_id = api.run("f/ops/echo", who="olga", permissioned_as="g/ops")
    token = api.services.identity.mint_job_token(
        job_id, "g/ops", expires_at=api.services.identity.clock() + HOUR_MS, created_by="u/olga")
    refused(api.post("/api/jobs/run/preview", token, json={
        "code": "def main():\n    return 1\n", "language": "python3"}), 403, "operator role")
    api.finish(job_id)


def test_a_developer_job_token_still_runs_previews(api: Api) -> None:
    """The cap is the creator's role: alice (developer) keeps previews in her jobs."""
    job_id, _ = api.running_job("u/alice", who="alice")
    token = api.services.identity.mint_job_token(
        job_id, "u/alice", expires_at=api.services.identity.clock() + HOUR_MS,
        created_by="u/alice")
    answer = api.post("/api/jobs/run/preview", token, json={
        "code": "def main():\n    return 1\n", "language": "python3"})
    assert answer.status_code == 200, answer.text
    api.finish(job_id)
