"""Specs pushed to gm:inbox by any Redis client: admitted, run, recorded; or rejected and explained."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack
import pytest
import redis

from tests.e2e.conftest import GROUP, Processes, worker_id_of, xwait

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(60)]

SCRIPT = """\
import sys

def main(name: str, n: int):
    print(f"hello {name}")
    print("a word on stderr", file=sys.stderr)
    print(f"n is {n}")
    return {"greeting": f"hello {name}", "double": n * 2}
"""


def test_inbox_spec_runs_with_full_record(
    procs: Processes, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A raw LPUSH gm:inbox spec runs; record, logs and their TTL follow DESIGN.md §4-§6."""
    assert procs.cli("settings", "set", "retention_s", "3600").returncode == 0
    (tmp_path / "x.py").write_text(SCRIPT)
    deployed = procs.cli("script", "deploy", "u/alice/x", str(tmp_path / "x.py"))
    assert deployed.returncode == 0, deployed.stderr
    digest = deployed.stdout.strip()
    procs.scheduler()
    worker = procs.worker()

    redis_client.lpush("gm:inbox", '{"path": "u/alice/x", "args": {"name": "Ada", "n": 21}}')
    event = xwait(redis_client, f"{GROUP}:events", lambda e: e["event"] == "completed", 30)
    job_id = event["id"]
    assert event["status"] == "success"

    assert redis_client.get(f"gm:jobloc:{job_id}") == b"default"
    raw = redis_client.hgetall(f"{GROUP}:job:{job_id}")
    record = {k.decode(): v for k, v in raw.items()}
    text = {k: v.decode() for k, v in record.items() if k not in ("args", "result")}
    assert text["id"] == job_id
    assert text["status"] == "success"
    assert text["kind"] == "script"
    assert text["tag"] == "python3"
    assert text["group"] == "default"
    assert text["script_path"] == "u/alice/x"
    assert text["script_hash"] == digest
    assert text["language"] == "python3"
    assert "code" not in text
    assert msgpack.unpackb(record["args"]) == {"name": "Ada", "n": 21}
    assert msgpack.unpackb(record["result"]) == {"greeting": "hello Ada", "double": 42}
    scheduled, created, started, completed = (
        int(text[f]) for f in ("scheduled_for", "created_at", "started_at", "completed_at"))
    assert scheduled == created <= started <= completed
    assert text["created_by"] == "u/inbox"
    assert text["permissioned_as"] == "u/inbox"
    assert text["attempt"] == "1"
    assert text["worker"] == worker_id_of(redis_client, worker.pid)
    assert re.fullmatch(r"[0-9a-f]{16,}", text["claim"]), text["claim"]
    assert int(text["duration_ms"]) >= 0

    logs = [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in redis_client.xrange(f"{GROUP}:logs:{job_id}")]
    assert [e["l"] for e in logs if e["s"] == "stdout"] == ["hello Ada", "n is 21"]
    assert [e["l"] for e in logs if e["s"] == "stderr"] == ["a word on stderr"]
    assert {e["a"] for e in logs} == {"1"}
    assert all(started <= int(e["t"]) <= completed for e in logs)

    for key in (f"{GROUP}:job:{job_id}", f"{GROUP}:logs:{job_id}"):
        assert 3500 < redis_client.ttl(key) <= 3600, key


def test_rejected_inbox_specs_are_listed_and_explained(
    procs: Processes, redis_client: redis.Redis
) -> None:
    """Specs that are not JSON or name an unknown path become failures that `job get` explains."""
    procs.scheduler()
    redis_client.lpush("gm:inbox", "this is not json {")
    redis_client.lpush("gm:inbox", '{"path": "u/nobody/missing", "args": {"a": 1}}')
    rejected: list[str] = []

    def collect(event: dict[str, str]) -> bool:
        if event["event"] == "rejected":
            rejected.append(event["id"])
        return len(rejected) == 2

    xwait(redis_client, f"{GROUP}:events", collect, 30)
    not_json, unknown_path = rejected  # the inbox is admitted oldest first

    listed = procs.cli("jobs", "list", "--status", "failure")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert len(rows) == 2, listed.stdout
    assert {row.split()[0] for row in rows} == {not_json, unknown_path}
    assert all("failure" in row for row in rows)

    got = procs.cli("job", "get", not_json)
    assert got.returncode == 0, got.stderr
    assert "FAILURE" in got.stdout
    assert "created by u/inbox" in got.stdout
    assert re.search(r"error\s+InvalidSpec: spec is not valid JSON", got.stdout), got.stdout
    assert re.search(r"raw spec\s+this is not json \{", got.stdout), got.stdout

    got = procs.cli("job", "get", unknown_path)
    assert got.returncode == 0, got.stderr
    assert re.search(r"error\s+InvalidSpec: .*no script at path 'u/nobody/missing'",
                     got.stdout), got.stdout
    assert "u/nobody/missing" in got.stdout.split("raw spec", 1)[1]
