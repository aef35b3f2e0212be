"""Identity end to end: real scheduler, worker and API processes; one script, two users.

A secret ``u/alice/token`` that only alice may read, and a script
``g/ops/read_secret`` of group ops (alice and bob are members, so both may run
it) that reads the secret through the in-job client. Run as alice it gets the
secret (and its log line shows ``[redacted]``); run as bob the in-job client
is refused; and the job's ``WM_TOKEN`` stops working once the job completed.
The scheduler process keeps identities too: a schedule's fires run as its
creator, and an inbox spec with an API token runs as the token's owner.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from auth.identity import IdentityStore
from common.keys import Keys
from gristmill.client import Gristmill
from gristmill.embedded import free_port
from tests.e2e.conftest import (
    Processes,
    clean_env,
    deadline,
    scheduler_registered,
    worker_id_of,
)
from vault.crypto import generate_key

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(90)]

SECRET = "alice-very-secret-4711"
READ_SECRET = """\
import hashlib
import os

import gristmill


def main(out: str):
    with open(out, "w") as handle:
        handle.write(os.environ["WM_TOKEN"])
    value = gristmill.get_variable("u/alice/token")
    print(f"the secret is {value}", flush=True)
    return {"sha256": hashlib.sha256(value.encode()).hexdigest(), "value": value}
"""
WHOAMI = "import os\ndef main():\n    return os.environ['WM_PERMISSIONED_AS']\n"


@dataclass
class Http:
    """A tiny stdlib client of the API process."""

    base: str

    def call(self, method: str, route: str, token: str | None, body: Any = None,
             query: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, decoded body) of one request; errors are answers too."""
        url = self.base + route + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, decode(response.read(), response.headers.get_content_type())
        except urllib.error.HTTPError as exc:
            return exc.code, decode(exc.read(), exc.headers.get_content_type())

    def ok(self, method: str, route: str, token: str, body: Any = None,
           query: dict[str, Any] | None = None) -> Any:
        status, answer = self.call(method, route, token, body, query)
        assert 200 <= status < 300, (method, route, status, answer)
        return answer

    def follow_logs(self, job_id: str, token: str) -> tuple[list[str], str]:
        """Read ``/logs?follow=1`` (SSE) to its end: (log lines, final status)."""
        request = urllib.request.Request(f"{self.base}/api/jobs/{job_id}/logs?follow=1",
                                         headers={"Authorization": f"Bearer {token}"})
        lines: list[str] = []
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.headers.get_content_type() == "text/event-stream"
            for event, data in sse(response):
                if event == "end":
                    return lines, data["status"]
                lines.append(data["line"])
        raise AssertionError(f"the log stream ended without an end event: {lines}")


def decode(payload: bytes, kind: str) -> Any:
    return json.loads(payload) if kind == "application/json" else payload.decode()


def sse(response: Any) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs of a server-sent event stream."""
    event = "message"
    for raw in response:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield event, json.loads(line.removeprefix("data: "))
            event = "message"


@dataclass
class Fleet:
    http: Http
    tokens: dict[str, str]


@pytest.fixture
def fleet(procs: Processes, redis_client: redis.Redis) -> Fleet:
    """Scheduler, worker and API sharing one secret key; alice and bob in group ops."""
    port = free_port()
    env = {"GRISTMILL_SECRET_KEY": generate_key(), "GRISTMILL_BASE_URL": f"http://127.0.0.1:{port}"}
    procs.scheduler(**env)
    worker = procs.worker(**env)
    procs.start("api", "api", "--port", str(port), env=clean_env(procs.redis_url, **env))
    http = Http(f"http://127.0.0.1:{port}")
    identity = IdentityStore(redis_client, Keys("gm"))
    admin = identity.ensure_admin()
    assert admin is not None
    deadline(lambda: healthy(http), 20, "the API to answer /api/health")
    worker_id_of(redis_client, worker.pid)
    scheduler_registered(redis_client)
    tokens = {"admin": admin}
    for name in ("alice", "bob"):
        http.ok("POST", "/api/users", admin, {"name": name})
        tokens[name] = identity.create_token(name, label="e2e")[0]
    http.ok("POST", "/api/groups/ops", admin)
    for name in ("alice", "bob"):
        http.ok("POST", "/api/groups/ops/members", admin, {"user": name})
    http.ok("POST", "/api/variables", tokens["alice"],
            {"path": "u/alice/token", "value": SECRET, "is_secret": True})
    http.ok("POST", "/api/scripts", tokens["alice"],
            {"path": "g/ops/read_secret", "code": READ_SECRET, "language": "python3"})
    return Fleet(http, tokens)


def healthy(http: Http) -> bool:
    try:
        return http.call("GET", "/api/health", None)[0] == 200
    except OSError:
        return False


def run_as(fleet: Fleet, who: str, out: Path) -> tuple[str, list[str], str]:
    """Run g/ops/read_secret as ``who`` over HTTP; (job id, its log lines, final status)."""
    token = fleet.tokens[who]
    job_id = fleet.http.ok("POST", "/api/jobs/run/p/g/ops/read_secret", token, {"out": str(out)})
    lines, status = fleet.http.follow_logs(job_id, token)
    return job_id, lines, status


def test_alice_reads_her_secret_and_logs_show_it_redacted(fleet: Fleet, job_share: Path) -> None:
    """Run as alice: success, the job got the secret, its log line and result say [redacted]."""
    job_id, lines, status = run_as(fleet, "alice", job_share / "alice-token")
    assert status == "success", lines
    assert lines == ["the secret is [redacted]"]
    answer = fleet.http.ok("GET", f"/api/jobs/{job_id}/result", fleet.tokens["alice"])
    # The job read the real secret (its hash matches), yet the record never holds it.
    assert answer["result"] == {"sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
                                "value": "[redacted]"}
    record = fleet.http.ok("GET", f"/api/jobs/{job_id}", fleet.tokens["alice"])
    assert record["permissioned_as"] == "u/alice"
    assert SECRET not in json.dumps(record)


RAISE_SECRET = """\
import gristmill


def main():
    raise ValueError("the secret is " + gristmill.get_variable("u/alice/token"))
"""


def test_a_secret_in_the_error_of_a_retried_attempt_is_redacted(
    fleet: Fleet, redis_client: redis.Redis
) -> None:
    """A job raises the secret it read and is retried: no attempt's error, in the record or its
    attempt history, holds the secret (the job printed nothing, so no log batch learnt it)."""
    alice = fleet.tokens["alice"]
    fleet.http.ok("POST", "/api/scripts", alice, {
        "path": "u/alice/raise_secret", "code": RAISE_SECRET, "language": "python3",
        "retry": {"constant": {"attempts": 1, "seconds": 0}}})
    job_id = fleet.http.ok("POST", "/api/jobs/run/p/u/alice/raise_secret", alice, {})
    _, status = fleet.http.follow_logs(job_id, alice)
    assert status == "failure"
    record = fleet.http.ok("GET", f"/api/jobs/{job_id}", alice)
    assert record["retries"] == 1, record
    assert record["error"]["message"] == "the secret is [redacted]"
    stored = [redis_client.hgetall(f"gm:{{wg:default}}:job:{job_id}"),
              redis_client.lrange(f"gm:{{wg:default}}:attempts:{job_id}", 0, -1)]
    assert stored[1], "the retried attempt left no history entry"
    assert SECRET.encode() not in repr(stored).encode() and SECRET not in json.dumps(record)


def test_bob_is_refused_by_the_in_job_client(fleet: Fleet, job_share: Path) -> None:
    """Run as bob (an ops member, so he may run it): the in-job client's read is refused (403)."""
    job_id, lines, status = run_as(fleet, "bob", job_share / "bob-token")
    assert status == "failure"
    assert not any(SECRET in line for line in lines)
    answer = fleet.http.ok("GET", f"/api/jobs/{job_id}/result", fleet.tokens["bob"])
    error = answer["error"]
    assert error["name"] == "JobClientError"
    assert error["message"] == "u/bob may not read u/alice/token (HTTP 403)"
    record = fleet.http.ok("GET", f"/api/jobs/{job_id}", fleet.tokens["bob"])
    assert record["permissioned_as"] == "u/bob"


def test_wm_token_stops_working_when_the_job_completes(fleet: Fleet, job_share: Path) -> None:
    """The job's WM_TOKEN, leaked to a file, is refused (401) once the job has completed."""
    out = job_share / "leaked"
    _, _, status = run_as(fleet, "alice", out)
    assert status == "success"
    leaked = out.read_text()
    assert leaked.startswith("gmj_")  # signed for its attempt: nothing stored to revoke
    for route in ("/api/whoami", "/api/variables/u/alice/token"):
        code, answer = fleet.http.call("GET", route, leaked)
        assert code == 401, answer
        assert "its job has completed" in answer["error"]


def test_run_wait_result_over_http_for_both_users(fleet: Fleet, job_share: Path) -> None:
    """run_wait_result: alice gets the (redacted) result; bob gets a 400 naming the refusal."""
    alice = fleet.http.ok("POST", "/api/jobs/run_wait_result/p/g/ops/read_secret",
                          fleet.tokens["alice"], {"out": str(job_share / "a")}, {"wait_s": 60})
    assert alice["sha256"] == hashlib.sha256(SECRET.encode()).hexdigest()
    code, bob = fleet.http.call("POST", "/api/jobs/run_wait_result/p/g/ops/read_secret",
                                fleet.tokens["bob"], {"out": str(job_share / "b")}, {"wait_s": 60})
    assert code == 400
    assert "JobClientError" in bob["error"] and "u/bob may not read u/alice/token" in bob["error"]


def test_schedule_fires_keep_the_creators_identity(fleet: Fleet) -> None:
    """alice's every-second schedule: the fires the scheduler process makes still run as alice."""
    alice = fleet.tokens["alice"]
    fleet.http.ok("POST", "/api/scripts", alice,
                  {"path": "u/alice/whoami", "code": WHOAMI, "language": "python3"})
    fleet.http.ok("POST", "/api/schedules", alice, {
        "path": "u/alice/every_second", "script_path": "u/alice/whoami", "cron": "* * * * * *"})

    def runs() -> list[str]:
        answer = fleet.http.ok("GET", "/api/schedules/u/alice/every_second", alice)
        return list(answer["runs"]) if len(answer["runs"]) >= 3 else []

    fires = deadline(runs, 20, "the scheduler to materialise two more fires")
    fleet.http.ok("POST", "/api/schedules/pause/u/alice/every_second", alice)
    identities = {fleet.http.ok("GET", f"/api/jobs/{job_id}", fleet.tokens["admin"])[
        "permissioned_as"] for job_id in fires}
    assert identities == {"u/alice"}


def test_inbox_spec_with_a_token_runs_as_its_owner(fleet: Fleet, gm: Gristmill) -> None:
    """An LPUSHed spec with alice's API token is admitted by the scheduler and runs as alice."""
    fleet.http.ok("POST", "/api/scripts", fleet.tokens["alice"],
                  {"path": "u/alice/whoami", "code": WHOAMI, "language": "python3"})
    job_id = str(uuid.uuid4())
    gm.push_raw({"id": job_id, "path": "u/alice/whoami", "token": fleet.tokens["alice"]})
    done = gm.wait(job_id, 30)
    assert (done.status.value, done.result, done.error) == ("success", "u/alice", None)
