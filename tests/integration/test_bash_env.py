"""bash jobs get their args as environment variables, end to end through a worker."""

from __future__ import annotations

import threading

import pytest

from common.fleet import Fleet
from common.models import Job, Status
from common.settings import Settings
from common.store import Store
from jobs.scripts import ScriptStore
from tests.integration.helpers import make_job
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

SCRIPT = 'name="$1"\ncount="${2:-10}"\necho "$(printenv name)/$(printenv count || echo unset)"\n'


def run(store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings, sandbox: Sandbox,
        **fields: object) -> Job:
    job = make_job(tag="bash", language="bash", **fields)
    store.enqueue(job, fresh_id=True)
    worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=settings, claim_block_s=0.5,
                    sandbox=sandbox)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        return store.wait(job.id, 30)
    finally:
        worker.stop()
        thread.join(30)


@pytest.mark.timeout(60)
def test_a_reserved_arg_name_fails_the_job_before_it_runs(
    store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings, sandbox: Sandbox
) -> None:
    """A bash parameter named BASH_ENV is refused with ArgumentError; the script never runs."""
    done = run(store, scripts, fleet, settings, sandbox, code='BASH_ENV="$1"\necho ran\n',
               args={"BASH_ENV": "/tmp/evil.sh"})
    assert done.status == Status.FAILURE and (done.error or {})["name"] == "ArgumentError"
    assert "BASH_ENV cannot be passed" in (done.error or {})["message"]
    assert store.logs(done.id) == []


@pytest.mark.timeout(60)
def test_bash_args_arrive_as_environment_variables(
    store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings, sandbox: Sandbox
) -> None:
    """printenv inside the job sees each given arg by name."""
    done = run(store, scripts, fleet, settings, sandbox, code=SCRIPT, args={"name": "Ada"})
    assert (done.status, done.result) == (Status.SUCCESS, "Ada/unset")
