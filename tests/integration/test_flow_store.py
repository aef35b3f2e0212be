"""Flow state on a real Redis: one atomic transition per event, the outbox, step outcomes handed
from another group's slot, crashes between each step, concurrent advancers, timers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from common.keys import Keys
from flows.expr import JsEngine
from flows.handoff import FLOW_FORWARD
from flows.inputs import FlowInputError
from flows.model import parse_flow
from flows.state import EarlyReturn, FlowCompleted, JobCompleted, Resumed, StartJob
from flows.store import FLOW_COMMIT, FlowStore, StepOutcome
from tests.conftest import RedisUnderTest, client_for
from tests.unit.flow_driver import flow, js, loop, raw, static

FLOW = "0b7e4a52-1111-4222-8333-444455556666"
NOW = 1_700_000_000_000

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def engine() -> Iterator[JsEngine]:
    e = JsEngine()
    yield e
    e.close()


@pytest.fixture
def fs(redis_client: redis.Redis, keys: Keys, engine: JsEngine) -> FlowStore:
    return FlowStore(redis_client, keys, engine, clock=lambda: NOW)


class Launcher:
    """Records what the flow asks for; idempotent like the real enqueue (ids already seen are skipped)."""

    def __init__(self) -> None:
        self.jobs: dict[str, StartJob] = {}
        self.order: list[str] = []
        self.canceled: list[str] = []
        self.completed: list[FlowCompleted] = []
        self.early: list[EarlyReturn] = []
        self.fail_next_start = False

    def start_job(self, flow_id: str, action: StartJob) -> None:
        if action.job not in self.jobs:
            self.jobs[action.job] = action
            self.order.append(action.job)
        if self.fail_next_start:
            self.fail_next_start = False
            raise ConnectionError("the process died here")

    def cancel_jobs(self, flow_id: str, jobs: list[str]) -> None:
        self.canceled.extend(jobs)

    def early_return(self, flow_id: str, action: EarlyReturn) -> None:
        self.early.append(action)

    def complete_flow(self, flow_id: str, action: FlowCompleted) -> None:
        self.completed.append(action)


def run_steps(fs: FlowStore, launcher: Launcher, steps: dict[str, Callable[[dict[str, Any]], Any]],
              *, step_group: str = "other", done: set[str] | None = None) -> int:
    """Run every started step not yet run: its outcome goes through the step group's slot."""
    done = set() if done is None else done
    ran = 0
    for job_id in list(launcher.order):
        if job_id in done or job_id in launcher.canceled:
            continue
        done.add(job_id)
        action = launcher.jobs[job_id]
        fn = steps.get(action.module_id, lambda args: args)
        fs.notify(step_group, StepOutcome("flows", FLOW, job_id, True, fn(action.args)))
        ran += 1
    fs.forward(step_group)
    return ran


def drain(fs: FlowStore, launcher: Launcher, steps: dict[str, Callable[[dict[str, Any]], Any]]) -> None:
    """Advance and run steps until the flow is quiet: the fleet, minus processes."""
    done: set[str] = set()
    for _ in range(100):
        while (flow_id := fs.take("flows", "adv1", 0.01)) is not None:
            fs.process("flows", flow_id, launcher)
            fs.release("flows", "adv1", flow_id)
        if run_steps(fs, launcher, steps, done=done) == 0:
            return
    raise AssertionError("the flow did not settle")


EXAMPLE = flow(
    raw("a", {"n": js("flow_input.n")}),
    loop("b", "results.a", [raw("c", {"x": js("flow_input.iter.value")})], parallel=True,
         parallelism=static(4)),
    {"id": "d", "value": {"type": "branchone", "default": [{"id": "f", "value": {"type": "identity"}}],
                          "branches": [{"expr": "results.b.reduce((s, v) => s + v, 0) > 100",
                                        "modules": [raw("e", {"total": js("results.b")})]}]}},
)
STEPS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "a": lambda a: list(range(a["n"])),
    "c": lambda a: a["x"] * a["x"],
    "e": lambda a: {"big": sum(a["total"])},
}


def test_a_flow_runs_to_completion_through_redis(fs: FlowStore) -> None:
    """The reference example: 3 steps, a parallel loop and a branch, every event through Redis."""
    launcher = Launcher()
    assert fs.create("flows", FLOW, parse_flow(EXAMPLE), {"n": 10})
    drain(fs, launcher, STEPS)
    assert [c.status for c in launcher.completed] == ["success"]
    assert launcher.completed[0].result == {"big": 285}
    state = fs.state("flows", FLOW)
    assert state is not None and state.status == "success" and state.jobs == {}
    assert state.root.modules[2].branch_chosen == 0


def test_create_twice_changes_nothing(fs: FlowStore, redis_client: redis.Redis, keys: Keys) -> None:
    """A retried create neither resets the state nor queues a second start."""
    assert fs.create("flows", FLOW, parse_flow(EXAMPLE), {"n": 1})
    assert not fs.create("flows", FLOW, parse_flow(EXAMPLE), {"n": 99})
    assert redis_client.llen(keys.group("flows").flow_events(FLOW)) == 1


def test_an_event_for_no_flow_is_refused(fs: FlowStore, redis_client: redis.Redis, keys: Keys) -> None:
    """Nothing is written for a flow that does not exist."""
    assert not fs.send("flows", FLOW, Resumed(step="a"))
    assert redis_client.exists(keys.group("flows").flow_events(FLOW)) == 0


def test_a_stale_commit_is_refused_and_writes_nothing(fs: FlowStore, redis_client: redis.Redis,
                                                      keys: Keys) -> None:
    """flow_commit.lua refuses a transition computed from an old version or another event."""
    fs.create("flows", FLOW, parse_flow(EXAMPLE), {"n": 1})
    g = keys.group("flows")
    k = [g.flow(FLOW), g.flow_events(FLOW), g.flow_outbox(FLOW), g.flows_running, g.flow_timers]
    head = redis_client.lindex(k[1], 0)
    assert FLOW_COMMIT(redis_client, k, ["7", head, "{}", FLOW, NOW, "1", 1, head, 0, "x"]) == [-1]
    assert FLOW_COMMIT(redis_client, k, ["0", "another event", "{}", FLOW, NOW, "1", 1, "another event",
                                         0, "x"]) == [-1]
    # Two events claimed applied where the list holds one: refused.
    assert FLOW_COMMIT(redis_client, k, ["0", head, "{}", FLOW, NOW, "1", 2, "more", 0, "x"]) == [-1]
    assert redis_client.zscore(k[3], FLOW) == NOW
    assert redis_client.hget(k[0], "version") == b"0" and redis_client.llen(k[2]) == 0
    assert redis_client.llen(k[1]) == 1
    # Applied: no event left, and the outbox's head comes back with the answer.
    assert FLOW_COMMIT(redis_client, k, ["0", head, "{}", FLOW, NOW, "0", 1, head, 0, "a1", "a2"]) == [
        0, b"a1", b"a2"]
    assert redis_client.hget(k[0], "version") == b"1" and redis_client.llen(k[1]) == 0


def test_a_crash_between_commit_and_dispatch_loses_nothing(fs: FlowStore, redis_client: redis.Redis,
                                                           keys: Keys) -> None:
    """Actions committed but not carried out are carried out by the next advancer, once each."""
    fs.create("flows", FLOW, parse_flow(EXAMPLE), {"n": 3})
    assert fs.advance_one("flows", FLOW)  # committed; the process "dies" before dispatching
    assert redis_client.llen(keys.group("flows").flow_outbox(FLOW)) == 1
    launcher = Launcher()
    assert fs.process("flows", FLOW, launcher) == 0  # no event left, but the outbox is dispatched
    assert [launcher.jobs[j].step for j in launcher.order] == ["a"]
    assert redis_client.llen(keys.group("flows").flow_outbox(FLOW)) == 0


def test_a_crash_midway_through_dispatch_repeats_only_idempotent_work(fs: FlowStore) -> None:
    """A dispatcher that dies after enqueuing a step leaves it at the head; the retry names the same job."""
    fs.create("flows", FLOW, parse_flow(EXAMPLE), {"n": 3})
    launcher = Launcher()
    launcher.fail_next_start = True
    fs.advance_one("flows", FLOW)
    with pytest.raises(ConnectionError):
        fs.dispatch("flows", FLOW, launcher)
    assert fs.dispatch("flows", FLOW, launcher) == 1
    assert len(launcher.order) == 1
    drain(fs, launcher, STEPS)
    assert launcher.completed[0].result == [0, 1, 4]  # default branch: the loop's result


def test_a_forwarder_crash_delivers_twice_and_the_flow_counts_once(fs: FlowStore, redis_client: redis.Redis,
                                                                    keys: Keys) -> None:
    """An outcome pushed to the flow but not removed from flownotify is pushed again: ignored."""
    fs.create("flows", FLOW, parse_flow(flow(raw("a"), raw("b"))), {})
    launcher = Launcher()
    fs.process("flows", FLOW, launcher)
    first = launcher.order[0]
    outcome = StepOutcome("flows", FLOW, first, True, {"v": 1})
    fs.notify("other", outcome)
    fs.send("flows", FLOW, JobCompleted(
        job=first, success=True, result={"v": 1}))  # the push that happened before the crash
    assert fs.forward("other") == 1
    assert redis_client.llen(keys.group("other").flow_notify) == 0
    assert fs.process("flows", FLOW, launcher) == 2
    assert [launcher.jobs[j].step for j in launcher.order] == ["a", "b"]


def test_a_step_in_its_flows_own_group_is_handed_over_and_removed_in_one_script(
        fs: FlowStore, redis_client: redis.Redis, keys: Keys) -> None:
    """Same group, same slot: flow_forward.lua delivers each outcome and removes it together;
    an outcome of a flow that is gone is removed, delivered nowhere."""
    fs.create("flows", FLOW, parse_flow(flow(raw("a"), raw("b"))), {})
    launcher = Launcher()
    fs.process("flows", FLOW, launcher)
    fs.notify("flows", StepOutcome("flows", FLOW, launcher.order[0], True, {"v": 1}))
    fs.notify("flows", StepOutcome("flows", "no-such-flow", "j", True, None))
    assert fs.forward("flows") == 2
    g = keys.group("flows")
    assert redis_client.llen(g.flow_notify) == 0
    assert redis_client.llen(g.flow_events(FLOW)) == 1
    assert not redis_client.exists(g.flow_events("no-such-flow"))
    assert fs.process("flows", FLOW, launcher) == 1
    assert [launcher.jobs[j].step for j in launcher.order] == ["a", "b"]


def test_flow_forward_hands_over_nothing_another_forwarder_took(
        fs: FlowStore, redis_client: redis.Redis, keys: Keys) -> None:
    """The head it read is gone (another forwarder handed it over): nothing is pushed again."""
    fs.create("flows", FLOW, parse_flow(flow(raw("a"))), {})
    g = keys.group("flows")
    taken = StepOutcome("flows", FLOW, "j1", True, 1)
    fs.notify("flows", StepOutcome("flows", FLOW, "j2", True, 2))
    events_before = redis_client.llen(g.flow_events(FLOW))
    moved = FLOW_FORWARD(redis_client, [g.flow_notify, g.flow_queue, g.flow(FLOW), g.flow_events(FLOW)],
                         [taken.to_json(), FLOW, taken.event().model_dump_json()])
    assert moved == 0
    assert redis_client.llen(g.flow_events(FLOW)) == events_before
    assert redis_client.llen(g.flow_notify) == 1


def test_concurrent_advancers_apply_each_event_exactly_once(
        fs: FlowStore, redis_client: redis.Redis, redis_server: RedisUnderTest, keys: Keys,
        engine: JsEngine) -> None:
    """Four advancers racing on one flow: every event applied once, none lost, none twice."""
    n = 40
    doc = flow(loop("l", f"Array.from({{length: {n}}}, (_, i) => i)",
                    [raw("c", {"i": js("flow_input.iter.index")})], parallel=True))
    fs.create("flows", FLOW, parse_flow(doc), {})
    launcher = Launcher()
    fs.process("flows", FLOW, launcher)
    assert len(launcher.order) == n
    for job_id in launcher.order:
        fs.notify("other", StepOutcome("flows", FLOW, job_id, True, launcher.jobs[job_id].args["i"]))
    fs.forward("other")

    _advance_at_once(redis_server, keys, engine, lambda mine: mine.advance_one("flows", FLOW))
    fs.dispatch("flows", FLOW, launcher)
    assert redis_client.hget(keys.group("flows").flow(FLOW), "version") == str(1 + n).encode()
    assert [c.result for c in launcher.completed] == [list(range(n))]


def _advance_at_once(redis_server: RedisUnderTest, keys: Keys, engine: JsEngine,
                     step: Callable[[FlowStore], object]) -> None:
    """Four advancers, each with a connection of its own, calling ``step`` until it answers
    falsy, all at once; returns when all have stopped."""

    def advancer() -> None:
        mine = FlowStore(client_for(redis_server.url), keys, engine, clock=lambda: NOW)
        while step(mine):
            pass

    threads = [threading.Thread(target=advancer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)


def _burst(fs: FlowStore, n: int) -> Launcher:
    """A parallel loop of ``n`` iterations started, and all their outcomes queued to the flow."""
    doc = flow(loop("l", f"Array.from({{length: {n}}}, (_, i) => i)",
                    [raw("c", {"i": js("flow_input.iter.index")})], parallel=True))
    fs.create("flows", FLOW, parse_flow(doc), {})
    launcher = Launcher()
    fs.process("flows", FLOW, launcher)
    for job_id in launcher.order:
        fs.notify("other", StepOutcome("flows", FLOW, job_id, True, launcher.jobs[job_id].args["i"]))
    assert fs.forward("other", limit=n) == n
    return launcher


def test_a_burst_of_events_is_applied_in_few_commits(fs: FlowStore, redis_client: redis.Redis,
                                                     keys: Keys) -> None:
    """130 completions queued at once: applied 64 at a time (3 commits, not 130), all of them."""
    launcher = _burst(fs, 130)
    assert fs.process("flows", FLOW, launcher) == 130
    assert redis_client.hget(keys.group("flows").flow(FLOW), "version") == b"4"  # start + 3
    assert [c.result for c in launcher.completed] == [list(range(130))]
    assert redis_client.llen(keys.group("flows").flow_events(FLOW)) == 0


def test_concurrent_batching_advancers_apply_each_event_exactly_once(
        fs: FlowStore, redis_server: RedisUnderTest, keys: Keys, engine: JsEngine) -> None:
    """Four advancers applying batches of one burst at once: each event once, none lost."""
    n = 200
    launcher = _burst(fs, n)

    _advance_at_once(redis_server, keys, engine,
                     lambda mine: mine._advance("flows", FLOW, batch=7) is not None)
    fs.dispatch("flows", FLOW, launcher)
    assert [c.result for c in launcher.completed] == [list(range(n))]


def test_actions_left_over_are_carried_out_before_the_next_event(
        fs: FlowStore, redis_client: redis.Redis, keys: Keys) -> None:
    """A dispatcher died with actions in the outbox and an event is queued: process carries the
    actions out first (told by the same read as the events), then applies the event."""
    fs.create("flows", FLOW, parse_flow(flow(raw("a"), raw("b"))), {})
    assert fs.advance_one("flows", FLOW)  # a's start committed, not carried out
    first = fs.state("flows", FLOW)
    assert first is not None
    (job_a,) = first.jobs
    fs.send("flows", FLOW, JobCompleted(job=job_a, success=True, result={"v": 1}))
    launcher = Launcher()
    assert fs.process("flows", FLOW, launcher) == 1
    assert [launcher.jobs[j].step for j in launcher.order] == ["a", "b"]
    assert redis_client.llen(keys.group("flows").flow_outbox(FLOW)) == 0


def test_a_suspend_timeout_fires_once(fs: FlowStore, redis_client: redis.Redis, keys: Keys) -> None:
    """The suspend's timer becomes one TimerFired event, however many sweepers run."""
    doc = flow(raw("a", suspend={"required_events": 1, "timeout": 5}), raw("b"))
    fs.create("flows", FLOW, parse_flow(doc), {})
    launcher = Launcher()
    drain(fs, launcher, {})
    assert launcher.completed == []
    timers = keys.group("flows").flow_timers
    assert redis_client.zrange(timers, 0, -1, withscores=True) == [(f"{FLOW} suspend:a".encode(), NOW + 5000)]
    assert fs.fire_due_timers("flows", NOW + 4999) == 0
    assert fs.fire_due_timers("flows", NOW + 5000) == 1
    assert fs.fire_due_timers("flows", NOW + 5000) == 0
    drain(fs, launcher, {})
    assert [(c.status, (c.error or {}).get("name")) for c in launcher.completed] == [
        ("failure", "SuspendedTimedOut")]


def test_a_timer_of_a_flow_whose_keys_expired_is_dropped(fs: FlowStore, redis_client: redis.Redis,
                                                         keys: Keys) -> None:
    """A timer left for a flow that is gone fires nothing: no events list without a TTL."""
    g = keys.group("flows")
    redis_client.zadd(g.flow_timers, {f"{FLOW} suspend:a": NOW})
    assert fs.fire_due_timers("flows", NOW) == 0
    assert redis_client.zcard(g.flow_timers) == 0
    assert redis_client.exists(g.flow_events(FLOW), g.flow_queue) == 0


def test_a_flow_s_own_timeout_timer_is_set_with_it_and_dropped_when_it_ends(
        redis_client: redis.Redis, keys: Keys, engine: JsEngine) -> None:
    """flow_open.lua adds "<id> flow_timeout" at start + timeout_s; the terminal commit removes it."""
    from common.models import Job, Kind, Status
    from flows.jobs import FlowJobs

    flow_jobs = FlowJobs(redis_client, keys, clock=lambda: NOW)
    job = Job(id=FLOW, kind=Kind.FLOWPREVIEW, language="", status=Status.QUEUED, tag="flow", group="flows",
              scheduled_for=NOW, created_at=NOW, created_by="admin", permissioned_as="u/admin",
              timeout_s=30)
    flow_jobs.open(job, flow=parse_flow(flow(raw("a"))))
    timers = keys.group("flows").flow_timers
    assert redis_client.zrange(timers, 0, -1, withscores=True) == [
        (f"{FLOW} flow_timeout".encode(), NOW + 30_000)]
    fs = FlowStore(redis_client, keys, engine, clock=lambda: NOW)
    launcher = Launcher()
    drain(fs, launcher, {})
    assert [c.status for c in launcher.completed] == ["success"]
    assert redis_client.zcard(timers) == 0


class Broken:
    """An evaluator with a bug."""

    def evaluate(self, expr: str, context: Any, *, step: str) -> Any:
        raise RuntimeError("bug")

    def truthy(self, expr: str, context: Any, *, step: str) -> bool:
        raise RuntimeError("bug")


def test_an_unexpected_error_fails_the_flow_instead_of_wedging_it(redis_client: redis.Redis,
                                                                 keys: Keys) -> None:
    """A transition that raises something unexpected ends the flow as failed; the event is consumed."""
    fs = FlowStore(redis_client, keys, Broken(), clock=lambda: NOW)
    fs.create("flows", FLOW, parse_flow(flow(raw("a", {"x": js("flow_input.x + 1")}))), {})
    launcher = Launcher()
    fs.process("flows", FLOW, launcher)
    assert [(c.status, (c.error or {}).get("name")) for c in launcher.completed] == [
        ("failure", "InternalError")]
    assert redis_client.llen(keys.group("flows").flow_events(FLOW)) == 0


class BreaksLater:
    """An evaluator that answers until told to break (a bug met on a later event)."""

    def __init__(self, engine: JsEngine) -> None:
        self.engine = engine
        self.broken = False

    def evaluate(self, expr: str, context: Any, *, step: str) -> Any:
        if self.broken:
            raise RuntimeError("bug")
        return self.engine.evaluate(expr, context, step=step)

    def truthy(self, expr: str, context: Any, *, step: str) -> bool:
        if self.broken:
            raise RuntimeError("bug")
        return self.engine.truthy(expr, context, step=step)


def test_an_error_on_the_state_kept_from_the_last_commit_fails_the_flow_as_on_a_read_one(
        redis_client: redis.Redis, keys: Keys, engine: JsEngine) -> None:
    """The store keeps the state it committed; a transition that raises on it reads the flow
    whole and fails it the usual way (InternalError), the event consumed."""
    evaluator = BreaksLater(engine)
    fs = FlowStore(redis_client, keys, evaluator, clock=lambda: NOW)
    fs.create("flows", FLOW, parse_flow(flow(raw("a"), raw("b", {"x": js("previous_result.v + 1")}))), {})
    launcher = Launcher()
    fs.process("flows", FLOW, launcher)
    evaluator.broken = True
    fs.send("flows", FLOW, JobCompleted(job=launcher.order[0], success=True, result={"v": 1}))
    fs.process("flows", FLOW, launcher)
    assert [(c.status, (c.error or {}).get("name")) for c in launcher.completed] == [
        ("failure", "InternalError")]
    assert redis_client.llen(keys.group("flows").flow_events(FLOW)) == 0


def test_two_stores_taking_turns_on_a_flow_each_see_the_others_commits(
        redis_client: redis.Redis, redis_server: RedisUnderTest, keys: Keys, engine: JsEngine) -> None:
    """Two schedulers' stores advance one flow by turns: the state one kept from its last
    commit is not used once the other committed (the version tells), and the flow ends right."""
    stores = [FlowStore(redis_client, keys, engine, clock=lambda: NOW),
              FlowStore(client_for(redis_server.url), keys, engine, clock=lambda: NOW)]
    stores[0].create("flows", FLOW, parse_flow(EXAMPLE), {"n": 10})
    launcher = Launcher()
    done: set[str] = set()
    turns = 0
    for _ in range(100):
        while (flow_id := stores[0].take("flows", "adv1", 0.01)) is not None:
            stores[turns % 2].process("flows", flow_id, launcher, max_events=1)
            stores[0].release("flows", "adv1", flow_id)
            if redis_client.llen(keys.group("flows").flow_events(FLOW)):
                redis_client.rpush(keys.group("flows").flow_queue, FLOW)
            turns += 1
        if run_steps(stores[turns % 2], launcher, STEPS, done=done) == 0:
            break
    assert turns > 10
    assert [(c.status, c.result) for c in launcher.completed] == [("success", {"big": 285})]


def test_the_sweep_redelivers_an_outcome_lost_between_completion_and_hand_off(
        redis_client: redis.Redis, keys: Keys, engine: JsEngine) -> None:
    """A step finished but its outcome never reached the flow: the sweep finds it, once stale."""
    clock = [NOW]
    fs = FlowStore(redis_client, keys, engine, clock=lambda: clock[0])
    fs.create("flows", FLOW, parse_flow(flow(raw("a"), raw("b"))), {})
    launcher = Launcher()
    fs.process("flows", FLOW, launcher)
    (job_a,) = launcher.order
    records = {job_a: StepOutcome("flows", FLOW, job_a, True, {"v": 1})}  # the step's completed record

    assert fs.sweep("flows", stale_after_ms=10_000, outcome_of=records.get) == 0  # not stale yet
    clock[0] += 10_000
    assert fs.sweep("flows", stale_after_ms=10_000, outcome_of=lambda j: None) == 0  # still running
    clock[0] += 10_000
    assert fs.sweep("flows", stale_after_ms=10_000, outcome_of=records.get) == 1
    fs.process("flows", FLOW, launcher)
    assert [launcher.jobs[j].step for j in launcher.order] == ["a", "b"]
    job_b = launcher.order[1]
    fs.send("flows", FLOW, JobCompleted(job=job_b, success=True, result=2))
    fs.process("flows", FLOW, launcher)
    assert [c.result for c in launcher.completed] == [2]
    g = keys.group("flows")
    assert redis_client.zcard(g.flows_running) == 0  # done flows leave the index
    assert 0 < redis_client.ttl(g.flow(FLOW)) <= 30 * 24 * 3600  # and expire with the record


def test_a_dead_advancers_flows_go_back_to_the_queue(fs: FlowStore, redis_client: redis.Redis,
                                                     keys: Keys) -> None:
    """Flows an advancer took and never released are queued again by recover_advancer."""
    fs.create("flows", FLOW, parse_flow(EXAMPLE), {"n": 1})
    assert fs.take("flows", "dead", 0.01) == FLOW
    assert fs.take("flows", "alive", 0.01) is None
    assert fs.recover_advancer("flows", "dead") == 1
    assert fs.take("flows", "alive", 0.01) == FLOW


def test_ended_iterations_are_kept_beside_the_state(fs: FlowStore, redis_client: redis.Redis,
                                                    keys: Keys) -> None:
    """Each archived frame is a field of the flow's hash; the state itself stays small."""
    doc = flow(loop("l", "[10, 20, 30]", [raw("c", {"v": js("flow_input.iter.value")})], parallel=True))
    fs.create("flows", FLOW, parse_flow(doc), {})
    launcher = Launcher()
    drain(fs, launcher, {})
    assert [c.result for c in launcher.completed] == [[{"v": 10}, {"v": 20}, {"v": 30}]]
    frames = fs.archived_frames("flows", FLOW)
    assert sorted(frames) == ["l/0", "l/1", "l/2"]
    assert frames["l/1"].modules[0].result == {"v": 20} and frames["l/1"].iter == {"index": 1, "value": 20}
    state = fs.state("flows", FLOW)
    assert state is not None and state.root.modules[0].frames == [] and state.archived == []


def test_create_binds_the_inputs_to_the_schema(fs: FlowStore) -> None:
    """Defaults fill missing inputs; inputs that do not fit refuse the flow before anything is stored."""
    doc = {**flow(raw("a", {"n": js("flow_input.n")})),
           "schema": {"type": "object", "properties": {"n": {"type": "integer", "default": 7}}}}
    with pytest.raises(FlowInputError, match='n: "x" is not of type "integer"'):
        fs.create("flows", FLOW, parse_flow(doc), {"n": "x"})
    assert fs.state("flows", FLOW) is None
    fs.create("flows", FLOW, parse_flow(doc), {})
    state = fs.state("flows", FLOW)
    assert state is not None and state.args == {"n": 7}
