"""What a newcomer meets first: waiting with nobody to run the job, the inbox without redis-cli,
empty listings, a time in the past, a rejected spec."""

from __future__ import annotations

import json
import uuid

import pytest

from gristmill.client import Gristmill
from tests.e2e.conftest import Processes, RunningFleet, deadline

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(180)]

HELLO = "def main(name: str = 'world'):\n    return f'hello {name}'\n"


def test_run_wait_says_no_worker_serves_the_group_and_times_out(procs: Processes,
                                                                 gm: Gristmill) -> None:
    """`run --wait --wait-timeout` with no worker: says so at once, gives up, the job stays queued."""
    gm.deploy_script("u/alice/hello", HELLO, "python3")
    done = procs.cli("run", "u/alice/hello", "--wait", "--wait-timeout", "1")
    assert done.returncode == 124, done.stderr
    assert "no live worker serves group 'default'" in done.stderr
    assert "is still queued after 1 s" in done.stderr
    job_id = done.stderr.splitlines()[0]
    assert gm.get_job(job_id).status.value == "queued"


def test_run_wait_timeout_does_not_warn_when_a_worker_serves(fleet_up: RunningFleet,
                                                             gm: Gristmill) -> None:
    """With a live worker, `--wait-timeout` waits for the result without a warning."""
    gm.deploy_script("u/alice/hello", HELLO, "python3")
    done = fleet_up.procs.cli("run", "u/alice/hello", "-a", "name=Ada", "--wait",
                              "--wait-timeout", "30")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "hello Ada"
    assert "no live worker" not in done.stderr


def test_inbox_push_enqueues_without_redis_cli(fleet_up: RunningFleet, gm: Gristmill) -> None:
    """`inbox push '<json>'` does what `LPUSH gm:inbox` does: the spec is admitted and runs."""
    gm.deploy_script("u/alice/hello", HELLO, "python3")
    job_id = str(uuid.uuid4())
    spec = json.dumps({"path": "u/alice/hello", "args": {"name": "Ada"}, "id": job_id})
    done = fleet_up.procs.cli("inbox", "push", spec)
    assert done.returncode == 0, done.stderr
    assert job_id in done.stderr
    job = gm.wait(job_id, 30)
    assert (job.status.value, job.result, job.permissioned_as) == ("success", "hello Ada", "u/inbox")


def test_rejected_inbox_spec_is_shown_as_such(fleet_up: RunningFleet, gm: Gristmill) -> None:
    """A rejected spec is listed and shown as a rejected inbox spec, not as a preview of nothing."""
    procs = fleet_up.procs
    assert procs.cli("inbox", "push", '{"path": "u/nobody/missing"}').returncode == 0

    def rejected() -> list[dict[str, str]]:
        out = procs.cli("jobs", "list", "--status", "failure", "--json").stdout
        return [j for j in json.loads(out) if j.get("raw_spec")]

    (job,) = deadline(rejected, 60, "the rejected spec to be recorded")
    row = procs.cli("jobs", "list", "--status", "failure").stdout
    assert "rejected inbox spec" in row and "preview" not in row.split(job["id"])[1].split("\n")[0]
    details = procs.cli("job", "get", job["id"]).stdout
    assert "rejected inbox spec" in details and "raw code" not in details and "()" not in details
    assert "u/nobody/missing" in details


def test_jobs_list_says_when_nothing_matches(procs: Processes) -> None:
    """An empty listing prints a line (on stderr, so stdout stays empty for scripts)."""
    done = procs.cli("jobs", "list", "--status", "canceled")
    assert done.returncode == 0 and done.stdout == ""
    assert "no job matches" in done.stderr


def test_run_at_a_past_time_warns(procs: Processes, gm: Gristmill) -> None:
    """`--at` in the past says the job runs now; a future one says nothing."""
    gm.deploy_script("u/alice/hello", HELLO, "python3")
    past = procs.cli("run", "u/alice/hello", "--at", "2020-01-01T09:00:00Z")
    assert past.returncode == 0, past.stderr
    assert "in the past" in past.stderr and "runs now" in past.stderr
    future = procs.cli("run", "u/alice/hello", "--at", "2099-01-01T09:00:00Z")
    assert future.returncode == 0 and "in the past" not in future.stderr
