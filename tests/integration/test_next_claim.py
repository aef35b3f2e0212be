"""A slot's next claim rides in the same write as its completion (``NextClaim``): the claim
starts the next ready job whatever the completion answers, finds nothing when ready is
empty, and is never made twice when the completion is repeated (an outage, new secrets)."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import RedisUnavailable
from common.instance import InstanceSettings
from common.models import Kind, Status
from common.settings import Settings
from common.store import NEW_SECRETS, Completed, Completion, NextClaim, Store
from jobs.scripts import ScriptStore
from tests.integration.helpers import make_job
from worker.executors.outcome import Outcome
from worker.runner import JobRunner
from worker.sandbox.policy import Sandbox

pytestmark = [pytest.mark.timeout(60), pytest.mark.cluster]


@pytest.fixture(params=["direct", "client"])
def any_store(request: pytest.FixtureRequest, store: Store) -> Store:
    """The worker's direct calls (one write; on a cluster, the client's calls anyway) and the
    client's own calls (the claims after the completions)."""
    if request.param == "direct":
        store.use_direct_calls()
    return store


def test_a_completion_claims_the_next_ready_job(any_store: Store) -> None:
    store = any_store
    first, second = make_job(), make_job()
    for job in (first, second):
        store.enqueue(job, fresh_id=True)
    (running,) = store.claim_start("default", "w1", 1, "a")
    (answer,) = store.complete_then_claim([Completion(
        running, Status.SUCCESS, {"result": 1}, 60, then_claim=NextClaim("default", "w1", "b"))])
    assert answer.outcome == 1 and answer.claimed is not None
    (claimed,) = answer.claimed
    assert claimed.id == second.id and claimed.status == Status.RUNNING
    assert claimed.worker == "w1" and (claimed.claim or "").startswith("b")
    assert store.get_job(first.id).status == Status.SUCCESS
    assert store.get_job(second.id).status == Status.RUNNING
    assert store.running_ids("default", "w1") == [second.id]
    # Ready is empty now: the next completion's claim finds nothing.
    (last,) = store.complete_then_claim([Completion(
        claimed, Status.SUCCESS, {"result": 2}, 60, then_claim=NextClaim("default", "w1", "c"))])
    assert last == Completed(1, [])
    store.close_direct_calls()


def test_the_claim_runs_whatever_the_completion_answers(any_store: Store) -> None:
    store = any_store
    jobs = [make_job() for _ in range(3)]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    first, second = store.claim_start("default", "w1", 2, "a")
    stale = first.model_copy(update={"claim": "not-it"})
    answers = store.complete_then_claim([
        Completion(stale, Status.SUCCESS, {"result": 0}, 60,
                   then_claim=NextClaim("default", "w1", "b")),
        Completion(second, Status.SUCCESS, {"result": 1}, 60),  # carries no claim
    ])
    assert [a.outcome for a in answers] == [0, 1]
    assert answers[1].claimed is None
    assert [job.id for job in answers[0].claimed or []] == [jobs[2].id]
    assert store.get_job(first.id).status == Status.RUNNING  # fenced off: untouched
    store.close_direct_calls()


class Pool:
    """A dedicated pool that answers every job at once (the runner's part of it)."""

    def handles(self, script_path: str | None, tag: str) -> bool:
        return True

    def run(self, **call: Any) -> Outcome:
        return Outcome(ok=True, result=1)


class FlakyStore(Store):
    """A store whose first completion is written but its answer lost (or answered with
    ``first_answer``), as an outage or new secrets would."""

    def __init__(self, store: Store, first_answer: int | None) -> None:
        super().__init__(store.client, store.keys)
        self.first_answer = first_answer
        self.sent: list[NextClaim | None] = []

    def complete_then_claim(self, completions: list[Completion]) -> list[Completed]:
        self.sent.extend(c.then_claim for c in completions)
        answers = super().complete_then_claim(completions)
        if len(self.sent) > 1:
            return answers
        if self.first_answer is None:
            raise RedisUnavailable("the reply was lost")
        return [Completed(self.first_answer, a.claimed) for a in answers]


@pytest.mark.parametrize("first_answer", [None, NEW_SECRETS])
def test_a_repeated_completion_carries_no_claim(
    store: Store, scripts: ScriptStore, settings: Settings, sandbox: Sandbox,
    first_answer: int | None,
) -> None:
    flaky = FlakyStore(store, first_answer)
    version, _ = scripts.deploy("u/alice/fast", "python3", "def main():\n    return 1\n")
    jobs = [make_job(kind=Kind.SCRIPT, code=None, script_path="u/alice/fast", script_hash=version.hash)
            for _ in range(3)]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    runner = JobRunner(store=flaky, scripts=scripts, settings=settings, sandbox=sandbox,
                       dedicated=Pool())  # type: ignore[arg-type]
    (started,) = flaky.claim_start("default", "w1", 1, "a")
    claimed = runner.run(started, InstanceSettings(), lambda: NextClaim("default", "w1", "b"))
    assert flaky.sent[0] == NextClaim("default", "w1", "b")
    assert flaky.sent[1:] == [None]  # the repeat carried no claim
    assert store.get_job(started.id).status == Status.SUCCESS
    # One claim made: the second job runs, the third is still queued.
    assert [store.get_job(job.id).status for job in jobs[1:]] == [Status.RUNNING, Status.QUEUED]
    if first_answer is None:  # the claim's answer was lost: the worker's reconciliation
        assert claimed is None  # gives the id back (tests/integration/test_outage.py)
    else:
        assert [job.id for job in claimed or []] == [jobs[1].id]
