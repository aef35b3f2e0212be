"""A job record this version cannot read (BadRecord): every API path that decodes one names
the job and the field instead of a bare 500; listings leave it out with a note; the CLI says
so and exits non-zero."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from gristmill import cli
from gristmill.embedded import EmbeddedRedis
from tests.api.conftest import Api

pytestmark = pytest.mark.timeout(60)

PREVIEW = {"code": "def main():\n    return 1\n", "language": "python3"}
FLOW = {"value": {"modules": [{"id": "a", "value": {
    "type": "rawscript", "language": "python3", "content": "def main():\n    return 1\n"}}]}}


def queued(api: Api, who: str = "admin", url: str = "/api/jobs/run/preview",
           body: dict[str, object] = PREVIEW) -> str:
    """A job run over HTTP (no worker: it stays queued); its id."""
    answer = api.post(url, who, json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.text)


def damage(api: Api, job_id: str, field: str = "kind", value: bytes = b"bogus") -> None:
    """Overwrite one field of the stored record with what this version cannot read."""
    group = api.services.store.locate(job_id)
    api.services.redis.hset(api.services.keys.group(group).job(job_id), field, value)


def assert_names_the_damage(answer: object, job_id: str, field: str = "kind") -> None:
    status, body = answer.status_code, answer.json()  # type: ignore[attr-defined]
    assert status == 500, body
    assert body["damaged_job"] == job_id
    assert f"job record {job_id} cannot be read" in body["error"]
    assert field in body["error"]


READS: dict[str, Callable[[Api, str], object]] = {
    "get": lambda api, j: api.get(f"/api/jobs/{j}"),
    "result": lambda api, j: api.get(f"/api/jobs/{j}/result"),
    "logs": lambda api, j: api.get(f"/api/jobs/{j}/logs"),
    "follow logs": lambda api, j: api.get(f"/api/jobs/{j}/logs", params={"follow": "1"}),
    "cancel": lambda api, j: api.post(f"/api/jobs/{j}/cancel", json={}),
    "resume urls": lambda api, j: api.get(f"/api/jobs/resume_urls/{j}"),
}


@pytest.mark.parametrize("read", list(READS))
def test_reading_a_damaged_job_names_it_and_the_field(api: Api, read: str) -> None:
    """GET, result, logs (plain and followed), cancel, a step's resume URLs: a 500 whose JSON
    body names the job and the field, not a bare Internal Server Error."""
    job_id = queued(api)
    damage(api, job_id)
    assert_names_the_damage(READS[read](api, job_id), job_id)


def test_an_undecodable_packed_field_is_named(api: Api) -> None:
    """args that are not msgpack: the error names the field and the decoder's complaint."""
    job_id = queued(api)
    damage(api, job_id, "args", b"\xc1")
    assert_names_the_damage(api.get(f"/api/jobs/{job_id}"), job_id, "field 'args'")


def test_damaged_flow_job_status_and_approvals_name_it(api: Api) -> None:
    """The flow status, approve and reject endpoints read the flow's record: the same answer."""
    flow_id = queued(api, url="/api/jobs/run/preview_flow", body=FLOW)
    damage(api, flow_id, "status", b"halfway")
    assert_names_the_damage(api.get(f"/api/jobs/{flow_id}/flow"), flow_id, "status")
    assert_names_the_damage(api.post(f"/api/jobs/{flow_id}/approve/a"), flow_id, "status")
    assert_names_the_damage(api.post(f"/api/jobs/{flow_id}/reject/a"), flow_id, "status")


def test_who_may_not_see_a_damaged_job_is_told_nothing_of_it(api: Api) -> None:
    """The owner fields as stored decide: bob gets alice's damaged job as a 404, alice the
    damage; with the owner fields themselves damaged, only an admin learns of it."""
    job_id = queued(api, "alice")
    damage(api, job_id)
    assert api.get(f"/api/jobs/{job_id}", "bob").status_code == 404
    assert_names_the_damage(api.get(f"/api/jobs/{job_id}", "alice"), job_id)
    damage(api, job_id, "created_by", b"\xff")  # the one field that cannot be decoded
    damage(api, job_id, "permissioned_as", b"u/nobody")
    assert api.get(f"/api/jobs/{job_id}", "alice").status_code == 404
    assert_names_the_damage(api.get(f"/api/jobs/{job_id}", "admin"), job_id, "created_by")


def test_listing_leaves_a_damaged_row_out_and_names_it(api: Api) -> None:
    """GET /api/jobs answers the readable rows, newest first, and X-Damaged-Jobs the others;
    a damaged row does not count toward the limit, so the pages still cover every job."""
    ids = [queued(api) for _ in range(4)]
    damage(api, ids[2])
    answer = api.get("/api/jobs")
    assert answer.status_code == 200, answer.text
    assert {row["id"] for row in answer.json()} == {ids[0], ids[1], ids[3]}
    assert answer.headers["X-Damaged-Jobs"] == quote(ids[2], safe="")

    seen: list[str] = []
    damaged: list[str] = []
    cursor: str | None = None
    while True:
        page = api.get("/api/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += [row["id"] for row in page.json()]
        damaged += [d for d in page.headers.get("X-Damaged-Jobs", "").split(",") if d]
        cursor = page.headers.get("X-Next-Cursor")
        if cursor is None:
            break
    assert sorted(seen) == sorted([ids[0], ids[1], ids[3]]) and len(seen) == 3
    assert damaged == [ids[2]]


def test_runs_page_lists_the_rest_and_says_what_it_left_out(api: Api) -> None:
    """The web UI's runs page: the readable jobs, and a note naming the damaged one."""
    kept, bad = queued(api), queued(api)
    damage(api, bad)
    client = TestClient(api.client.app, follow_redirects=False)
    assert client.post("/signin", data={"token": api.tokens["admin"]}).status_code == 303
    page = client.get("/runs")
    assert page.status_code == 200, page.text
    assert f"/jobs/{kept}" in page.text
    assert "Left out: 1 job record" in page.text and f"/jobs/{bad}" in page.text
    detail = client.get(f"/jobs/{bad}")
    assert detail.status_code == 500 and f"job record {bad} cannot be read" in detail.text


def test_followed_logs_of_a_record_damaged_midway_end_with_an_error_event(api: Api) -> None:
    """Damaged while its logs are followed (the 200 already sent): an ``error`` event naming
    the job ends the stream."""
    job_id = queued(api)
    redis = api.services.redis
    waiting = threading.Event()

    def damage_once_followed() -> None:
        # The stream waits in XREAD BLOCK for new lines: damage the record then.
        while not waiting.is_set():
            if any(c.get("cmd") == "xread" for c in redis.client_list()):
                damage(api, job_id)
                waiting.set()
            waiting.wait(0.01)  # the poll's pace; the condition is the blocked XREAD

    thread = threading.Thread(target=damage_once_followed, daemon=True)
    thread.start()
    answer = api.get(f"/api/jobs/{job_id}/logs", params={"follow": "1"})
    waiting.set()
    thread.join(5)
    assert answer.status_code == 200
    event, data = answer.text.strip().split("\n")[-2:]
    assert event == "event: error"
    assert f"job record {job_id} cannot be read" in json.loads(data.removeprefix("data: "))["error"]


def test_a_job_token_of_a_damaged_job_is_refused_naming_it(api: Api) -> None:
    """A WM_TOKEN is checked against its job's record: unreadable, the token cannot be
    checked, so the request is refused (401 naming the job and the field), not let through."""
    job_id, token = api.running_job("u/alice", who="alice")
    damage(api, job_id)
    answer = api.get("/api/whoami", token)
    assert answer.status_code == 401, answer.text
    error = answer.json()["error"]
    assert error.startswith(f"this job token's job record {job_id} cannot be read: ")
    assert "kind" in error


def test_run_wait_result_of_a_record_damaged_while_waited_for_names_it(api: Api) -> None:
    """run_wait_result waits on the job's done list; damaged meanwhile, the answer names it."""
    redis = api.services.redis
    found: list[str] = []
    waiting = threading.Event()

    def damage_once_waited_for() -> None:
        # The request blocks in BLMOVE on the job's done list: the job exists; damage it then.
        while not waiting.is_set():
            if any(c.get("cmd") == "blmove" for c in redis.client_list()):
                (job_id,) = [k.decode().rsplit(":", 1)[1]
                             for k in redis.scan_iter(match=api.services.keys.jobloc("*"))]
                damage(api, job_id)
                found.append(job_id)
                waiting.set()
            waiting.wait(0.01)  # the poll's pace; the condition is the blocked BLMOVE

    thread = threading.Thread(target=damage_once_waited_for, daemon=True)
    thread.start()
    answer = api.post("/api/jobs/run_wait_result/preview", json=PREVIEW, params={"wait_s": 30})
    waiting.set()
    thread.join(5)
    assert found, "the request never waited"
    assert_names_the_damage(answer, found[0])


@pytest.mark.parametrize("command", [["job", "get"], ["job", "get", "--json"], ["job", "logs"]])
def test_cli_on_a_damaged_record_says_so_and_exits_non_zero(
    api: Api, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], command: list[str],
) -> None:
    """`gristmill job get` / `job logs`: one line naming the job and the field, exit 2."""
    job_id = queued(api)
    damage(api, job_id)
    monkeypatch.setenv("GRISTMILL_REDIS_URL", redis_server.url)
    args = [*command[:2], job_id, *command[2:]]
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"gristmill: job record {job_id} cannot be read") and "kind" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_cli_jobs_list_leaves_a_damaged_row_out_with_a_note(
    api: Api, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`gristmill jobs list`: the readable rows on stdout, the damaged one named on stderr."""
    kept, bad = queued(api), queued(api)
    damage(api, bad)
    monkeypatch.setenv("GRISTMILL_REDIS_URL", redis_server.url)
    assert cli.main(["jobs", "list"]) == 0
    out, err = capsys.readouterr()
    assert kept in out and bad not in out
    assert f"left out: job record {bad} cannot be read" in err


def test_cli_schedule_show_leaves_a_damaged_run_out_with_a_note(
    api: Api, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`gristmill schedule show`: the schedule and its readable runs, the damaged run named."""
    api.script("u/alice/echo", who="alice")
    created = api.post("/api/schedules", "alice", json={
        "path": "u/alice/nightly", "script_path": "u/alice/echo", "cron": "0 3 * * *"})
    assert created.status_code == 201, created.text
    (fire,) = api.get("/api/schedules/u/alice/nightly", "alice").json()["runs"]
    damage(api, fire)
    monkeypatch.setenv("GRISTMILL_REDIS_URL", redis_server.url)
    assert cli.main(["schedule", "show", "u/alice/nightly"]) == 0
    out, err = capsys.readouterr()
    assert "u/alice/nightly" in out and fire not in out
    assert f"left out: job record {fire} cannot be read" in err


def test_cli_jobs_cancel_names_a_damaged_job_it_cannot_cancel(
    api: Api, redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`gristmill jobs cancel --status running`: the readable jobs are canceled; a record that
    cannot be read (so cannot be canceled by id either) is named on stderr, not passed over,
    and the command exits 1: not everything it was asked to cancel was."""
    kept, bad = queued(api), queued(api)
    started = api.services.store.claim_start("default", "w1", 2, "cli-test-")
    assert sorted(job.id for job in started) == sorted([kept, bad])
    damage(api, bad)
    monkeypatch.setenv("GRISTMILL_REDIS_URL", redis_server.url)
    assert cli.main(["jobs", "cancel", "--status", "running"]) == 1
    out, err = capsys.readouterr()
    assert out == "1 job(s) canceled\n"
    named, summary = err.splitlines()
    assert named.startswith(f"gristmill: left out: job record {bad} cannot be read")
    assert "kind" in named
    assert summary == "gristmill: 1 job(s) not canceled: their records cannot be read"
    assert api.services.redis.hget(
        api.services.keys.group("default").job(kept), "canceled_by") is not None
