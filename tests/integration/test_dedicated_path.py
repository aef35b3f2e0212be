"""A dedicated job goes to its script's process with nothing prepared for a process of its own;
a job whose version pins packages still has its environment looked up first."""

from __future__ import annotations

from typing import Any

import pytest

from common.instance import InstanceSettings
from common.models import Job, Kind, Status
from common.settings import Settings
from common.store import Store
from jobs.scripts import ScriptStore
from tests.integration.helpers import make_job
from worker import runner as runner_module
from worker.dependencies import JobDeps
from worker.executors.command import Prepared
from worker.executors.outcome import Outcome
from worker.runner import JobRunner
from worker.sandbox.policy import Sandbox

pytestmark = pytest.mark.timeout(30)

PATH = "u/alice/fast"


class Pool:
    """A DedicatedPool's part the runner uses: which scripts it takes, and one run each."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def handles(self, script_path: str | None, tag: str) -> bool:
        return script_path == PATH

    def run(self, **call: Any) -> Outcome:
        call["source"] = call["code"]()
        self.runs.append(call)
        return Outcome(ok=True, result={"n": call["args"]["n"]})


class Deps:
    """Dependencies that count their look-ups (no version here needs an environment)."""

    def __init__(self) -> None:
        self.looked_up: list[str] = []

    def for_job(self, job: Job, *_: Any, **__: Any) -> JobDeps:
        self.looked_up.append(job.id)
        return JobDeps({})


def run_one(store: Store, scripts: ScriptStore, settings: Settings, sandbox: Sandbox,
            monkeypatch: pytest.MonkeyPatch, **deploy: Any) -> tuple[Job, Pool, Deps, list[str]]:
    version, _ = scripts.deploy(PATH, "python3", "def main(n):\n    return n\n", **deploy)
    prepared: list[str] = []
    real_prepare = runner_module.prepare

    def counted_prepare(language: str, code: str, args: dict[str, object]) -> Prepared:
        prepared.append(language)
        return real_prepare(language, code, args)

    monkeypatch.setattr(runner_module, "prepare", counted_prepare)
    pool, deps = Pool(), Deps()
    runner = JobRunner(store=store, scripts=scripts, settings=settings, sandbox=sandbox,
                       deps=deps, dedicated=pool)  # type: ignore[arg-type]
    job = make_job(kind=Kind.SCRIPT, code=None, script_path=PATH, script_hash=version.hash,
                   args={"n": 7})
    store.enqueue(job, fresh_id=True)
    (started,) = store.claim_start("default", "w1", 1, "c")
    runner.run(started, InstanceSettings())
    return store.get_job(job.id), pool, deps, prepared


def test_a_dedicated_job_skips_prepare_and_the_dependency_lookup(
    store: Store, scripts: ScriptStore, settings: Settings, sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done, pool, deps, prepared = run_one(store, scripts, settings, sandbox, monkeypatch)
    assert (done.status, done.result) == (Status.SUCCESS, {"n": 7})
    assert prepared == [] and deps.looked_up == []
    (call,) = pool.runs
    assert call["source"][0] == "def main(n):\n    return n\n"
    assert call["env"]["WM_JOB_ID"] == done.id


def test_a_version_with_pinned_packages_looks_up_its_environment_first(
    store: Store, scripts: ScriptStore, settings: Settings, sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done, pool, deps, prepared = run_one(
        store, scripts, settings, sandbox, monkeypatch,
        lock_fields={"lock_status": "locked", "lock": "six==1.16.0"})
    assert done.status == Status.SUCCESS
    assert prepared == ["python3"] and deps.looked_up == [done.id]
    assert len(pool.runs) == 1  # no environment after all (the spy's answer): still dedicated
