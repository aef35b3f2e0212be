"""The HTTP API behaves as issue 4 says: runs, jobs, scripts, schedules, items, identities, errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from api.errors import MAX_BODY_BYTES
from common.models import Status
from tests.api.conftest import ECHO, Api
from worker.worker import Worker

pytestmark = pytest.mark.cluster  # the API on a Redis Cluster too (tests/conftest.py)

FAIL = "def main():\n    raise ValueError('the input was wrong')\n"
SLOW = "import time\ndef main():\n    time.sleep(30)\n"


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


# -- running ----------------------------------------------------------------------------------


def test_run_by_path_answers_the_job_id_and_queues_the_args(api: Api) -> None:
    """POST /run/p/{path}: the body is the job id; the JSON body became the job's args."""
    digest = api.script("u/alice/echo", who="alice")
    answer = api.post("/api/jobs/run/p/u/alice/echo", "alice", json={"x": 5, "extra": "ignored"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert is_uuid(answer.text)
    job = api.job(answer.text)
    assert (job.status, job.kind.value, job.script_path, job.script_hash) == (
        Status.QUEUED, "script", "u/alice/echo", digest)
    assert (job.args, job.created_by, job.permissioned_as) == (
        {"x": 5, "extra": "ignored"}, "u/alice", "u/alice")


def test_run_by_hash_runs_exactly_that_version(api: Api) -> None:
    """POST /run/h/{hash} runs the named version even after a newer one was deployed."""
    old = api.script("u/admin/v", "def main():\n    return 1\n")
    api.script("u/admin/v", "def main():\n    return 2\n")
    answer = api.post(f"/api/jobs/run/h/{old}", json={})
    assert answer.status_code == 200 and is_uuid(answer.text)
    assert api.job(answer.text).script_hash == old


def test_run_preview_takes_the_inbox_field_names(api: Api) -> None:
    """POST /run/preview with {code, language, args} answers the id of a preview job."""
    answer = api.post("/api/jobs/run/preview", "bob",
                      json={"code": ECHO, "language": "python3", "args": {"x": 2}})
    assert answer.status_code == 200 and is_uuid(answer.text)
    job = api.job(answer.text)
    assert (job.kind.value, job.code, job.args, job.created_by) == ("preview", ECHO, {"x": 2}, "u/bob")


def test_run_without_body_runs_with_no_args(api: Api) -> None:
    """No body at all is the same as {}: the script's defaults apply."""
    api.script("u/admin/echo")
    answer = api.client.post("/api/jobs/run/p/u/admin/echo", headers=api.auth("admin"))
    assert answer.status_code == 200, answer.text
    assert api.job(answer.text).args == {}


def test_run_args_must_be_a_json_object(api: Api) -> None:
    """A body that is not an object is refused with 422 naming the body."""
    api.script("u/admin/echo")
    answer = api.post("/api/jobs/run/p/u/admin/echo", json=[1, 2])
    assert answer.status_code == 422
    assert "body" in answer.json()["error"]
    assert api.job_count() == 0


def test_run_an_unknown_script_is_a_clear_400(api: Api) -> None:
    """Running a path where nothing is deployed says so, and enqueues nothing."""
    answer = api.post("/api/jobs/run/p/u/admin/nothing_here", json={})
    assert answer.status_code == 400
    assert "u/admin/nothing_here" in answer.json()["error"]
    assert api.job_count() == 0


def test_run_wait_result_answers_the_result(api: Api, worker: Worker) -> None:
    """POST /run_wait_result/p, /h and /preview answer the job's result as the JSON body."""
    digest = api.script("u/admin/echo")
    by_path = api.post("/api/jobs/run_wait_result/p/u/admin/echo", json={"x": 3},
                       params={"wait_s": 60})
    by_hash = api.post(f"/api/jobs/run_wait_result/h/{digest}", json={"x": 4},
                       params={"wait_s": 60})
    preview = api.post("/api/jobs/run_wait_result/preview", params={"wait_s": 60},
                       json={"code": ECHO, "language": "python3", "args": {"x": 5}})
    assert [(r.status_code, r.json()) for r in (by_path, by_hash, preview)] == [
        (200, {"x": 3}), (200, {"x": 4}), (200, {"x": 5})]


def test_run_wait_result_too_short_is_408_with_the_job_id(api: Api) -> None:
    """A wait shorter than the job is 408, naming the job, which is still queued."""
    api.script("u/admin/echo")
    answer = api.post("/api/jobs/run_wait_result/p/u/admin/echo", json={},
                      params={"wait_s": 0.05})
    assert answer.status_code == 408
    message = answer.json()["error"]
    job_id = message.split()[1]
    assert f"GET /api/jobs/{job_id}/result" in message
    assert api.job(job_id).status == Status.QUEUED


def test_run_wait_result_of_a_failed_job_names_the_error(api: Api, worker: Worker) -> None:
    """A failed job answers 400 with its status, error name and message."""
    api.script("u/admin/fail", FAIL)
    answer = api.post("/api/jobs/run_wait_result/p/u/admin/fail", json={}, params={"wait_s": 60})
    assert answer.status_code == 400
    message = answer.json()["error"]
    assert "failure" in message and "ValueError" in message and "the input was wrong" in message


def test_wait_s_is_bounded(api: Api) -> None:
    """wait_s outside (0, 600] is a 422 naming wait_s, and nothing is enqueued."""
    api.script("u/admin/echo")
    for wait in (0, 601):
        answer = api.post("/api/jobs/run_wait_result/p/u/admin/echo", json={},
                          params={"wait_s": wait})
        assert answer.status_code == 422 and "wait_s" in answer.json()["error"]
    assert api.job_count() == 0


def test_scheduled_for_and_scheduled_in_secs(api: Api) -> None:
    """scheduled_for (ISO or ms) and scheduled_in_secs set when the job may start."""
    api.script("u/admin/echo")
    iso = api.run("u/admin/echo", scheduled_for="2100-01-01T00:00:00Z")
    assert api.job(iso).scheduled_for == int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)
    millis = api.run("u/admin/echo", scheduled_for="4102444800000")
    assert api.job(millis).scheduled_for == 4102444800000
    before = api.services.store.clock()
    later = api.run("u/admin/echo", scheduled_in_secs=3600)
    after = api.services.store.clock()
    assert before + 3_600_000 <= api.job(later).scheduled_for <= after + 3_600_000
    scheduled = api.services.keys.group("default").scheduled
    assert api.services.redis.zscore(scheduled, later) is not None


def test_bad_scheduled_for_is_refused(api: Api) -> None:
    """A scheduled_for that is no time is a 400 naming scheduled_for."""
    api.script("u/admin/echo")
    answer = api.post("/api/jobs/run/p/u/admin/echo", json={}, params={"scheduled_for": "soon"})
    assert answer.status_code == 400
    assert "scheduled_for" in answer.json()["error"]


def test_job_id_is_used_and_never_run_twice(api: Api) -> None:
    """job_id names the job; the same id again is a 409 and the first job is untouched."""
    api.script("u/admin/echo")
    chosen = str(uuid.uuid4())
    assert api.run("u/admin/echo", {"x": 1}, job_id=chosen) == chosen
    again = api.post("/api/jobs/run/p/u/admin/echo", json={"x": 2}, params={"job_id": chosen})
    assert again.status_code == 409
    assert chosen in again.json()["error"] and "already exists" in again.json()["error"]
    assert api.job(chosen).args == {"x": 1}
    bad = api.post("/api/jobs/run/p/u/admin/echo", json={}, params={"job_id": "not-a-uuid"})
    assert bad.status_code == 400 and "UUID" in bad.json()["error"]


def test_tag_timeout_and_permissioned_as(api: Api) -> None:
    """tag, timeout_s and permissioned_as are taken from the query."""
    api.script("g/ops/echo", who="alice")
    job_id = api.run("g/ops/echo", who="alice", tag="gpu", timeout_s=7, permissioned_as="g/ops")
    job = api.job(job_id)
    assert (job.tag, job.timeout_s, job.permissioned_as, job.created_by) == (
        "gpu", 7, "g/ops", "u/alice")
    bad = api.post("/api/jobs/run/p/g/ops/echo", "alice", json={}, params={"timeout_s": 0})
    assert bad.status_code == 422 and "timeout_s" in bad.json()["error"]


def test_admin_may_run_as_anyone_and_that_is_logged(api: Api) -> None:
    """An admin runs a job as u/alice: allowed, created_by stays u/admin, and a log event says so."""
    api.script("u/alice/echo", who="alice")
    with capture_logs() as events:
        job_id = api.run("u/alice/echo", permissioned_as="u/alice")
    job = api.job(job_id)
    assert (job.permissioned_as, job.created_by) == ("u/alice", "u/admin")
    assert {"event": "admin runs a job as another identity", "admin": "u/admin",
            "permissioned_as": "u/alice", "log_level": "info"} in events


def test_an_oversized_result_is_an_explicit_error(api: Api, worker: Worker) -> None:
    """A result over max_result_bytes (2 MiB) fails with ResultTooLarge, never a substitute."""
    code = "def main():\n    return 'x' * (9 * 1024 * 1024)\n"
    answer = api.post("/api/jobs/run_wait_result/preview", params={"wait_s": 60},
                      json={"code": code, "language": "python3"})
    assert answer.status_code == 400
    assert "ResultTooLarge" in answer.json()["error"]
    assert "max_result_bytes" in answer.json()["error"]


# -- reading jobs -----------------------------------------------------------------------------


def test_get_job_decodes_the_record(api: Api, worker: Worker) -> None:
    """GET /api/jobs/{id}: DESIGN.md's field names, args and result as JSON, attempts, no claim."""
    api.script("u/admin/echo")
    job_id = api.run("u/admin/echo", {"x": 9})
    api.services.store.wait(job_id, 60)
    record = api.get(f"/api/jobs/{job_id}").json()
    assert record["id"] == job_id and record["status"] == "success"
    assert record["args"] == {"x": 9} and record["result"] == {"x": 9}
    for name in ("kind", "tag", "group", "script_path", "script_hash", "language",
                 "scheduled_for", "created_at", "started_at", "completed_at", "created_by",
                 "permissioned_as", "attempt", "worker", "duration_ms"):
        assert name in record, name
    assert "claim" not in record
    assert [a["status"] for a in record["attempts"]] == ["success"]


def test_get_an_unknown_job_is_404(api: Api) -> None:
    """An id that never existed is a 404 that names it."""
    missing = str(uuid.uuid4())
    answer = api.get(f"/api/jobs/{missing}")
    assert answer.status_code == 404 and missing in answer.json()["error"]


def test_result_while_queued_then_success_then_failure(api: Api, worker: Worker) -> None:
    """/result: the status while not done, the result on success, the error on failure."""
    api.script("u/admin/echo")
    api.script("u/admin/fail", FAIL)
    later = api.run("u/admin/echo", scheduled_in_secs=3600)
    assert api.get(f"/api/jobs/{later}/result").json() == {"id": later, "status": "queued"}
    ok = api.run("u/admin/echo", {"x": 2})
    bad = api.run("u/admin/fail")
    api.services.store.wait(ok, 60)
    api.services.store.wait(bad, 60)
    assert api.get(f"/api/jobs/{ok}/result").json() == {"id": ok, "status": "success",
                                                        "result": {"x": 2}}
    failed = api.get(f"/api/jobs/{bad}/result").json()
    assert failed["status"] == "failure"
    assert failed["error"]["name"] == "ValueError"
    assert failed["error"]["message"] == "the input was wrong"


def test_logs_and_follow_streams_events_until_completion(api: Api, worker: Worker) -> None:
    """/logs lists lines; ?follow=1 streams them as SSE and ends with the final status."""
    code = "def main():\n    for i in range(3):\n        print(f'line {i}', flush=True)\n    return 0\n"
    answer = api.post("/api/jobs/run/preview", json={"code": code, "language": "python3"})
    job_id = answer.text
    with api.client.stream("GET", f"/api/jobs/{job_id}/logs", params={"follow": 1},
                           headers=api.auth("admin")) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = list(sse(stream.iter_lines()))
    assert [e["data"]["line"] for e in events if e["event"] == "message"] == [
        "line 0", "line 1", "line 2"]
    assert events[-1] == {"event": "end", "data": {"status": "success"}}
    lines = api.get(f"/api/jobs/{job_id}/logs").json()
    assert [(e["stream"], e["line"], e["attempt"]) for e in lines] == [
        ("stdout", f"line {i}", 1) for i in range(3)]


def sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Server-sent events from response lines: {"event", "data"} each."""
    event = "message"
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield {"event": event, "data": json.loads(line.removeprefix("data: "))}
            event = "message"


def test_list_jobs_filters(api: Api) -> None:
    """GET /api/jobs filters by status, kind, path, created_by and creation time."""
    api.script("u/admin/echo")
    api.script("g/ops/echo", who="alice")
    admins = api.run("u/admin/echo")
    alices = api.run("g/ops/echo", who="alice")
    preview = api.post("/api/jobs/run/preview", json={"code": ECHO, "language": "python3"}).text
    api.finish(admins)

    def ids(**query: object) -> list[str]:
        answer = api.get("/api/jobs", params=query)
        assert answer.status_code == 200, answer.text
        return [job["id"] for job in answer.json()]

    assert set(ids()) == {admins, alices, preview}
    assert ids(status="canceled") == [admins]
    assert set(ids(status="queued")) == {alices, preview}
    assert ids(kind="preview") == [preview]
    assert ids(path="g/ops/echo") == [alices]
    assert ids(created_by="u/alice") == [alices]
    created = api.job(alices).created_at
    assert alices in ids(created_after=created, created_before=created + 1)
    assert ids(created_before=0) == []
    bad = api.get("/api/jobs", params={"created_after": "yesterday"})
    assert bad.status_code == 400 and "created_after" in bad.json()["error"]


def test_list_jobs_pages(api: Api) -> None:
    """A cursor pages through the newest-first list without gaps or repeats, then stops."""
    api.script("u/admin/echo")
    made = [api.run("u/admin/echo", {"x": i}) for i in range(5)]
    everything = [job["id"] for job in api.get("/api/jobs").json()]
    pages: list[list[str]] = []
    cursor: str | None = None
    for _ in range(4):
        params: dict[str, object] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        answer = api.get("/api/jobs", params=params)
        pages.append([job["id"] for job in answer.json()])
        cursor = answer.headers.get("x-next-cursor")
        if cursor is None:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [i for page in pages for i in page] == everything
    assert set(everything) == set(made)
    assert api.get("/api/jobs", params={"limit": 0}).status_code == 422
    assert api.get("/api/jobs", params={"cursor": "not a cursor"}).status_code == 422


def test_job_counts(api: Api) -> None:
    """Counts per status and kind come from the indexes; a user gets those of his own jobs."""
    api.script("u/admin/echo")
    done = api.run("u/admin/echo")
    api.run("u/admin/echo")
    api.finish(done)
    counts = api.get("/api/jobs/counts").json()
    assert counts["status"]["canceled"] == 1 and counts["status"]["queued"] == 1
    assert counts["kind"]["script"] == 2 and counts["kind"]["preview"] == 0
    alices = api.get("/api/jobs/counts", "alice").json()
    assert alices == {"status": {"live": 0, "success": 0, "failure": 0, "canceled": 0}}
    api.script("g/ops/echo", who="alice")
    api.run("g/ops/echo", who="alice")
    assert api.get("/api/jobs/counts", "alice").json()["status"]["live"] == 1


def test_cancel_a_queued_job(api: Api) -> None:
    """Cancel answers the outcome; the job is canceled, by whom and why; a second cancel is 400."""
    api.script("u/alice/echo", who="alice")
    job_id = api.run("u/alice/echo", who="alice", scheduled_in_secs=3600)
    answer = api.post(f"/api/jobs/{job_id}/cancel", "alice", json={"reason": "not needed"})
    assert answer.json() == {"id": job_id, "outcome": "canceled"}
    result = api.get(f"/api/jobs/{job_id}/result", "alice").json()
    assert (result["status"], result["canceled_by"], result["canceled_reason"]) == (
        "canceled", "u/alice", "not needed")
    again = api.post(f"/api/jobs/{job_id}/cancel", "alice")
    assert again.status_code == 400 and "already completed" in again.json()["error"]


def test_cancel_a_running_job(api: Api, worker: Worker) -> None:
    """Canceling a running job asks its worker, which stops it: status canceled."""
    job_id = api.post("/api/jobs/run/preview", json={
        "code": "import time\ndef main():\n    print('up', flush=True)\n    time.sleep(60)\n",
        "language": "python3"}).text
    assert api.services.store.logs(job_id, block_ms=30_000)[0].line == "up"
    assert api.post(f"/api/jobs/{job_id}/cancel").json()["outcome"] == "requested"
    assert api.services.store.wait(job_id, 30).status == Status.CANCELED


# -- scripts and schedules --------------------------------------------------------------------


def test_scripts_create_get_list_history(api: Api) -> None:
    """Each new code is a new immutable version; get by path (latest) or hash; history in order."""
    first = api.post("/api/scripts", "alice", json={
        "path": "u/alice/s", "code": "def main():\n    return 1\n", "language": "python3"})
    assert first.status_code == 201 and first.json()["created"] is True
    same = api.post("/api/scripts", "alice", json={
        "path": "u/alice/s", "code": "def main():\n    return 1\n", "language": "python3"})
    assert same.status_code == 201 and same.json()["created"] is False
    second = api.script("u/alice/s", "def main():\n    return 2\n", who="alice")
    latest = api.get("/api/scripts/p/u/alice/s", "alice").json()
    assert (latest["hash"], latest["code"], latest["created_by"]) == (
        second, "def main():\n    return 2\n", "u/alice")
    old = api.get(f"/api/scripts/h/{first.json()['hash']}", "alice").json()
    assert old["code"] == "def main():\n    return 1\n"
    assert api.get("/api/scripts/history/u/alice/s", "alice").json() == [
        first.json()["hash"], second]
    assert {"path": "u/alice/s", "hash": second} in api.get("/api/scripts", "alice").json()


def test_script_with_unknown_language_is_refused(api: Api) -> None:
    """An unsupported language is a 400 listing the supported ones."""
    answer = api.post("/api/scripts", json={"path": "u/admin/x", "code": "x", "language": "cobol"})
    assert answer.status_code == 400
    assert "cobol" in answer.json()["error"] and "python3" in answer.json()["error"]


def test_schedules_create_list_get_pause_resume_delete(api: Api) -> None:
    """A schedule is created, listed, shown with its runs, paused, resumed and deleted."""
    api.script("u/alice/echo", who="alice")
    created = api.post("/api/schedules", "alice", json={
        "path": "u/alice/nightly", "script_path": "u/alice/echo", "cron": "0 3 * * *",
        "args": {"x": 1}})
    assert created.status_code == 201, created.text
    assert created.json()["created_by"] == "u/alice"
    assert [s["path"] for s in api.get("/api/schedules", "alice").json()] == ["u/alice/nightly"]
    shown = api.get("/api/schedules/u/alice/nightly", "alice").json()
    assert shown["cron"] == "0 3 * * *" and len(shown["runs"]) == 1
    first_fire = api.job(shown["runs"][0])
    assert (first_fire.permissioned_as, first_fire.schedule_path) == ("u/alice", "u/alice/nightly")
    for action in ("pause", "resume", "delete"):
        answer = api.post(f"/api/schedules/{action}/u/alice/nightly", "alice")
        assert answer.json() == {"path": "u/alice/nightly", "done": action}
    assert api.get("/api/schedules", "alice").json() == []
    bad = api.post("/api/schedules/explode/u/alice/nightly", "alice")
    assert bad.status_code == 404 and "pause, resume or delete" in bad.json()["error"]


def test_schedule_with_a_bad_cron_is_refused(api: Api) -> None:
    """A cron expression that does not parse is a 400 naming it."""
    api.script("u/admin/echo")
    answer = api.post("/api/schedules", json={"path": "u/admin/s", "script_path": "u/admin/echo",
                                              "cron": "every day"})
    assert answer.status_code == 400 and "every day" in answer.json()["error"]


# -- variables and resources ------------------------------------------------------------------


def test_variables_set_get_meta_list_delete(api: Api) -> None:
    """A plain variable round-trips; meta and list show it; delete removes it."""
    api.variable("u/alice/color", "blue", who="alice")
    assert api.get("/api/variables/u/alice/color", "alice").json() == "blue"
    meta = api.get("/api/variables/meta/u/alice/color", "alice").json()
    assert (meta["value"], meta["is_secret"], meta["updated_by"]) == ("blue", False, "u/alice")
    assert [v["path"] for v in api.get("/api/variables", "alice").json()] == ["u/alice/color"]
    assert api.delete("/api/variables/u/alice/color", "alice").json() == {"deleted": "u/alice/color"}
    gone = api.get("/api/variables/u/alice/color", "alice")
    assert gone.status_code == 404 and "u/alice/color" in gone.json()["error"]


def test_secrets_are_encrypted_and_never_listed(api: Api) -> None:
    """A secret reads back decrypted, is stored sealed, and list/meta never show its value."""
    api.variable("u/alice/pw", "hunter2-very-secret", secret=True, who="alice")
    assert api.get("/api/variables/u/alice/pw", "alice").json() == "hunter2-very-secret"
    stored = api.services.redis.hget(api.services.keys.variable("u/alice/pw"), "value")
    assert stored is not None and b"hunter2" not in stored
    listed = api.get("/api/variables", "alice")
    assert "hunter2" not in listed.text
    assert listed.json()[0]["is_secret"] is True and listed.json()[0]["value"] is None
    meta = api.get("/api/variables/meta/u/alice/pw", "alice")
    assert meta.json()["value"] is None and "hunter2" not in meta.text
    # Updating the value without repeating is_secret keeps it secret.
    api.post("/api/variables", "alice", json={"path": "u/alice/pw", "value": "new-secret-1"})
    assert api.get("/api/variables/meta/u/alice/pw", "alice").json()["is_secret"] is True


def test_resources_set_get_list_delete(api: Api) -> None:
    """A typed JSON resource round-trips and is listed; its value must be an object."""
    body = {"path": "g/ops/db", "resource_type": "postgresql",
            "value": {"host": "db", "port": 5432}}
    assert api.post("/api/resources", "alice", json=body).status_code == 201
    got = api.get("/api/resources/g/ops/db", "alice").json()
    assert (got["resource_type"], got["value"]) == ("postgresql", {"host": "db", "port": 5432})
    assert [r["path"] for r in api.get("/api/resources", "alice").json()] == ["g/ops/db"]
    bad = api.post("/api/resources", "alice", json={**body, "value": [1]})
    assert bad.status_code == 422 and "value" in bad.json()["error"]
    assert api.delete("/api/resources/g/ops/db", "alice").json() == {"deleted": "g/ops/db"}
    assert api.get("/api/resources", "alice").json() == []


# -- identities and settings ------------------------------------------------------------------


def test_whoami(api: Api) -> None:
    """whoami names the caller, its groups and token (never the secret)."""
    me = api.get("/api/whoami", "alice").json()
    assert (me["name"], me["groups"], me["is_admin"]) == ("u/alice", ["ops"], False)
    assert me["token"]["kind"] == "api" and api.tokens["alice"] not in json.dumps(me)


def test_users_created_listed_deleted_by_admin(api: Api) -> None:
    """Admins create, list and delete users; a deleted user's token stops working."""
    created = api.post("/api/users", json={"name": "dave", "password": "long enough pw"})
    assert created.status_code == 201 and created.json()["name"] == "dave"
    assert "dave" in [u["name"] for u in api.get("/api/users").json()]
    token = api.services.identity.create_token("dave")[0]
    assert api.get("/api/whoami", token).status_code == 200
    assert api.delete("/api/users/dave").json() == {"deleted": "dave"}
    assert api.get("/api/whoami", token).status_code == 401
    twice = api.post("/api/users", json={"name": "alice"})
    assert twice.status_code == 400 and "already exists" in twice.json()["error"]


def test_groups_and_members(api: Api) -> None:
    """Admins make groups and members; members then run as the group; non-admins see their own."""
    assert api.post("/api/groups/data").status_code == 201
    assert api.post("/api/groups/data/members", json={"user": "carol"}).status_code == 200
    assert api.get("/api/groups").json()["data"] == ["carol"]
    assert api.get("/api/groups", "carol").json() == {"data": ["carol"]}
    assert api.get("/api/whoami", "carol").json()["groups"] == ["data"]
    assert api.delete("/api/groups/data/members/carol").status_code == 200
    assert api.get("/api/whoami", "carol").json()["groups"] == []
    assert api.delete("/api/groups/data").json() == {"deleted": "data"}
    assert "data" not in api.get("/api/groups").json()


def test_tokens_create_list_revoke(api: Api) -> None:
    """A user mints a token (shown once), lists it without secret, revokes it: then 401."""
    made = api.post("/api/tokens", "bob", json={"label": "ci", "expires_in_s": 3600})
    assert made.status_code == 201
    token, token_id = made.json()["token"], made.json()["token_id"]
    assert api.get("/api/whoami", token).json()["name"] == "u/bob"
    listed = api.get("/api/tokens", "bob")
    assert token_id in [t["token_id"] for t in listed.json()] and token not in listed.text
    assert api.delete(f"/api/tokens/{token_id}", "bob").json() == {"revoked": token_id}
    refused = api.get("/api/whoami", token)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]


def test_settings_read_and_changed_by_admin(api: Api) -> None:
    """Everyone reads settings; admins change them; a bad value is a 400."""
    assert api.put("/api/settings/retention_s", params={"value": "3600"}).json() == {
        "retention_s": "3600"}
    assert api.get("/api/settings", "carol").json()["retention_s"] == 3600
    bad = api.put("/api/settings/retention_s", params={"value": "forever"})
    assert bad.status_code == 400 and "retention_s" in bad.json()["error"]


def test_grants_let_another_user_run_a_script(api: Api) -> None:
    """An owner grants bob run on a script: bob may then run it (as himself), not before."""
    api.script("u/alice/shared", who="alice")
    before = api.post("/api/jobs/run/p/u/alice/shared", "bob", json={})
    assert before.status_code == 403
    granted = api.post("/api/grants", "alice", json={"path": "u/alice/shared",
                                                      "identity": "u/bob", "level": "run"})
    assert granted.status_code == 200, granted.text
    job_id = api.run("u/alice/shared", who="bob")
    assert api.job(job_id).permissioned_as == "u/bob"


def test_folders_share_items_with_their_members(api: Api) -> None:
    """A folder's readers read its variables; others do not."""
    assert api.post("/api/folders/shared", "alice").status_code == 201
    api.variable("f/shared/greeting", "hi", who="alice")
    assert api.get("/api/variables/f/shared/greeting", "carol").status_code == 403
    added = api.post("/api/folders/shared/members", "alice",
                     params={"identity": "u/carol", "role": "reader"})
    assert added.status_code == 200, added.text
    assert api.get("/api/variables/f/shared/greeting", "carol").json() == "hi"


# -- the API's shape --------------------------------------------------------------------------


def test_openapi_lists_the_operations(api: Api) -> None:
    """/api/openapi.json documents runs, jobs, scripts, items and identities."""
    schema = api.client.get("/api/openapi.json").json()
    paths = schema["paths"]
    for path in ("/api/jobs/run/p/{path}", "/api/jobs/run/h/{script_hash}",
                 "/api/jobs/run/preview", "/api/jobs/run_wait_result/p/{path}",
                 "/api/jobs/{job_id}", "/api/jobs/{job_id}/logs", "/api/scripts",
                 "/api/schedules", "/api/variables", "/api/resources", "/api/users",
                 "/api/groups", "/api/tokens", "/api/settings"):
        assert path in paths, path
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


def test_health_and_metrics_need_no_token(api: Api) -> None:
    """/api/health and /metrics answer without a token."""
    assert api.client.get("/api/health").json() == {"status": "ok"}
    metrics = api.client.get("/metrics")
    assert metrics.status_code == 200 and "gristmill_" in metrics.text


def operations(api: Api) -> list[tuple[str, str]]:
    """Every (method, concrete path) of the OpenAPI spec, path parameters filled in."""
    schema = api.client.get("/api/openapi.json").json()
    filled = {"path": "u/admin/x", "script_hash": "0123456789abcdef", "job_id": str(uuid.uuid4()),
              "name": "x", "user": "x", "token_id": "0123456789ab", "key": "retention_s",
              "action": "pause"}
    found: list[tuple[str, str]] = []
    for template, methods in schema["paths"].items():
        path = template
        for name, value in filled.items():
            path = path.replace("{" + name + "}", value)
        found.extend((method.upper(), path) for method in methods)
    return found


def test_everything_but_health_needs_a_token(api: Api) -> None:
    """Every documented operation except health and signed resume URLs answers 401 without a token."""
    checked = 0
    for method, path in operations(api):
        # A resume URL's signature is its permission (flows/approval.py), like Windmill's.
        if path == "/api/health" or path.startswith("/api/jobs/flows/{flow_id}/pause/"):
            continue
        answer = api.client.request(method, path, json={})
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in answer.json()["error"]
        checked += 1
    assert checked >= 30
    assert api.job_count() == 0


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "Bearer ", "gm_abc"])
def test_malformed_authorization_headers_are_401(api: Api, header: str) -> None:
    """Other schemes, an empty bearer or a bare token are a 401 saying how to authenticate."""
    answer = api.client.get("/api/whoami", headers={"Authorization": header})
    assert answer.status_code == 401
    assert "Bearer" in answer.json()["error"]


def test_errors_are_json_with_a_message(api: Api) -> None:
    """Unknown routes, wrong methods and invalid input all answer {"error": "..."}."""
    for answer, status in (
        (api.get("/api/no/such/route"), 404),
        (api.client.delete("/api/health"), 405),
        (api.post("/api/scripts", json={"path": "u/admin/x"}), 422),
        (api.post("/api/scripts", content=b"{not json",
                  headers={"content-type": "application/json"}),
         422),
    ):
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]


def test_missing_fields_are_named(api: Api) -> None:
    """A 422 names the missing field, so the caller knows what to add."""
    answer = api.post("/api/scripts", json={"path": "u/admin/x", "language": "python3"})
    assert answer.status_code == 422 and "body.code" in answer.json()["error"]


def test_oversized_request_is_413(api: Api) -> None:
    """A body over 16 MiB is a 413 that says the limit, and nothing is enqueued."""
    api.script("u/admin/echo")
    big = b'{"x": "' + b"a" * (MAX_BODY_BYTES + 10) + b'"}'
    answer = api.post("/api/jobs/run/p/u/admin/echo", content=big,
                      headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert "16 MiB" in answer.json()["error"]
    assert api.job_count() == 0


def test_oversized_streamed_request_is_413(api: Api) -> None:
    """A chunked body (no Content-Length) that grows past 16 MiB is refused with 413 too."""
    api.script("u/admin/echo")
    chunk = b"a" * (1024 * 1024)

    def body() -> Iterator[bytes]:
        yield b'{"x": "'
        for _ in range(17):
            yield chunk
        yield b'"}'

    answer = api.post("/api/jobs/run/p/u/admin/echo", content=body(),
                      headers={"content-type": "application/json"})
    assert answer.status_code == 413, answer.text
    assert "16 MiB" in answer.json()["error"]
    assert api.job_count() == 0
