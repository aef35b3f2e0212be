"""`gristmill run --many FILE.jsonl`: one spec a line, ids out, every bad line recorded."""

from __future__ import annotations

import json

import pytest
import redis

from common.errors import NotFound
from common.models import Status
from gristmill.client import Gristmill
from tests.e2e.conftest import Processes, deadline

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def test_run_many_enqueues_each_line_and_reports_bad_ones(
    procs: Processes, gm: Gristmill, redis_client: redis.Redis
) -> None:
    """Good lines queued with the options as defaults; bad ones named by line, with a record."""
    gm.deploy_script("u/alice/hello", "def main(name: str, greeting: str):\n    return 1\n",
                     "python3")
    lines = [json.dumps({"path": "u/alice/hello", "args": {"name": f"n{i}"}}) for i in range(5)]
    lines.insert(2, "")  # blank lines are skipped
    lines.insert(4, "{not json")
    lines.append(json.dumps({"path": "u/alice/hello", "tag": "gpu", "args": {"greeting": "yo"}}))
    specs = procs.tmp_path / "specs.jsonl"
    specs.write_text("\n".join(lines) + "\n")
    done = procs.cli("run", "--many", str(specs), "-a", "greeting=hi", "--tag", "fast")
    assert done.returncode == 1, done.stderr
    ids = done.stdout.split()
    assert len(ids) == 7
    assert "line 5: rejected" in done.stderr and "recorded as failed job" in done.stderr
    assert "6 queued, 0 duplicates, 1 rejected" in done.stderr
    bad = gm.get_job(ids[3])  # recorded by the command itself
    assert bad.status == Status.FAILURE and bad.raw_spec == "{not json"
    # The queued ones wait in the inbox, durable, until a scheduler admits them.
    with pytest.raises(NotFound, match="wait in the inbox"):
        gm.get_job(ids[0])
    procs.scheduler()
    deadline(lambda: redis_client.llen("gm:{wg:default}:ready") == 6 or None, 30,
             "the scheduler to admit the batch")
    first = gm.get_job(ids[0])
    assert (first.args, first.tag) == ({"name": "n0", "greeting": "hi"}, "fast")
    last = gm.get_job(ids[6])  # its own fields win over the options
    assert (last.args, last.tag) == ({"greeting": "yo"}, "gpu")
    assert redis_client.llen("gm:{wg:default}:ready") == 6


def test_run_many_from_stdin_refuses_a_path(procs: Processes) -> None:
    """--many with a path is a usage error saying so."""
    done = procs.cli("run", "u/alice/hello", "--many", "-")
    assert done.returncode == 2
    assert "--many takes its specs from the file" in done.stderr
