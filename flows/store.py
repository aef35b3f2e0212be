"""Flow state in Redis: one atomic transition per event, actions through an outbox.

Every key of a flow is in its flow job's slot ``{wg:G}`` (``common/keys.py``).
An event is appended to the flow's ``flowevents`` list (and the flow id to
the group's ``flowq``). An advancer reads the state, its version and the
event at the head, computes the transition in Python (the expressions need
V8, which Lua has not), and commits with ``flow_commit.lua``: the new state,
the removal of that event and the actions appended to the flow's
``flowoutbox``, all or nothing, refused if another advancer committed first.
The actions are then carried out (``dispatch``) and each removed once done;
they are idempotent (step job ids are derived from flow, step and attempt), so
a dispatcher that dies midway is simply repeated.

How a step that runs in another group's slot reaches its flow without a
cross-slot script is written in docs/ARCHITECTURE.md ("Flows"): its outcome
goes to ``flownotify`` in the step's own slot, and :meth:`FlowStore.forward`
moves it to the flow's events (at least once; duplicates are ignored).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol

import redis
from pydantic import TypeAdapter

from common.clock import Clock, now_ms
from common.connection import move_all_back, redis_errors
from common.keys import Keys
from common.luascripts import LuaScript, ScriptArg
from flows.expr import Evaluator
from flows.handoff import POP_IF_HEAD, StepOutcome
from flows.handoff import forward as forward_outcomes
from flows.handoff import send as send_event
from flows.inputs import bind_inputs
from flows.model import OpenFlow, dump_flow, parse_flow
from flows.state import (
    Action,
    AwaitResume,
    CancelJobs,
    EarlyReturn,
    Event,
    FlowCompleted,
    FlowState,
    FrameState,
    Start,
    StartJob,
    TimerFired,
)
from flows.transition import advance, fail_flow, initial_state


def _script(name: str) -> LuaScript:
    return LuaScript(name, resources.files("flows").joinpath("lua", f"{name}.lua").read_text())


FLOW_CREATE = _script("flow_create")
FLOW_COMMIT = _script("flow_commit")
FLOW_TIMER = _script("flow_timer")

_EVENTS: TypeAdapter[Event] = TypeAdapter(Event)
_ACTIONS: TypeAdapter[Action] = TypeAdapter(Action)
_DEF_CACHE_SIZE = 256
_STATE_CACHE_SIZE = 64  # flows whose last committed state an advancing store keeps
_COMMIT_OUTBOX_HEADS = 100  # how many actions flow_commit.lua answers (LRANGE 0 99)
EVENT_BATCH = 64  # events applied by one transition at most
LEFTOVER: tuple[int, int, list[bytes]] = (0, 0, [])  # _advance: carry out the outbox first
_LEFTOVER_ROUNDS = 3  # then apply events even if another dispatcher keeps the outbox busy
DEFAULT_RETENTION_S = 30 * 24 * 3600
AWAIT_PREFIX = "await:"  # flow hash field of a step's approval wait (f: holds archived frames)


class StepLauncher(Protocol):
    """What carries out a flow's actions; each call must be idempotent (it may be repeated)."""

    def start_job(self, flow_id: str, action: StartJob) -> None:
        """Enqueue the step job ``action.job`` (an id that already exists is not enqueued again)."""

    def cancel_jobs(self, flow_id: str, jobs: list[str]) -> None: ...

    def early_return(self, flow_id: str, action: EarlyReturn) -> None: ...

    def complete_flow(self, flow_id: str, action: FlowCompleted) -> None:
        """Complete the flow job's record (which notifies a parent flow in turn)."""


OutcomeLookup = Callable[[str], "StepOutcome | None"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FlowStore:
    """Creates flows, queues their events, applies them one atomic transition at a time."""

    def __init__(self, client: redis.Redis, keys: Keys, evaluator: Evaluator | None = None, *,
                 clock: Clock = now_ms, retention_s: int = DEFAULT_RETENTION_S) -> None:
        self.client = client
        self.retention_s = retention_s
        self.keys = keys
        self.evaluator = evaluator
        self.clock = clock
        self._defs: dict[str, OpenFlow] = {}
        # flow id -> (its version, definition and state after this store's last commit)
        self._states: dict[str, tuple[str, OpenFlow, FlowState]] = {}

    # -- producers ---------------------------------------------------------------------------

    @redis_errors
    def create(self, group: str, flow_id: str, flow: OpenFlow, args: dict[str, Any]) -> bool:
        """Store a new flow and queue its start; False if it exists already (nothing changes).

        The args get the flow schema's defaults and are checked against it first
        (FlowInputError, a SpecError, lists what does not fit).
        """
        g = self.keys.group(group)
        state = initial_state(flow_id, bind_inputs(flow.schema_, args))
        created = FLOW_CREATE(
            self.client, [g.flow(flow_id), g.flow_events(flow_id), g.flow_queue, g.flows_running],
            [flow_id, dump_flow(flow), state.model_dump_json(), Start().model_dump_json(), self.clock()])
        return bool(created)

    @redis_errors
    def send(self, group: str, flow_id: str, event: Event) -> bool:
        """Queue an event for a flow; False when there is no such flow."""
        return send_event(self.client, self.keys, group, flow_id, event)

    @redis_errors
    def notify(self, step_group: str, outcome: StepOutcome) -> None:
        """Record a step's outcome in the step's own slot (done by its completion once wired)."""
        self.client.rpush(self.keys.group(step_group).flow_notify, outcome.to_json())

    @redis_errors
    def forward(self, step_group: str, limit: int = 100) -> int:
        """Hand the outcomes recorded in ``step_group`` to their flows (:func:`flows.handoff.forward`)."""
        return forward_outcomes(self.client, self.keys, step_group, limit)

    # -- reading -----------------------------------------------------------------------------

    @redis_errors
    def state(self, group: str, flow_id: str) -> FlowState | None:
        raw = self.client.hget(self.keys.group(group).flow(flow_id), "state")
        return None if raw is None else FlowState.model_validate_json(raw)

    @redis_errors
    def awaits(self, group: str, flow_id: str) -> dict[str, AwaitResume]:
        """The approval waits a flow asked for, by step address (ended ones included)."""
        fields = self.client.hgetall(self.keys.group(group).flow(flow_id))
        return {_text(k)[len(AWAIT_PREFIX):]: AwaitResume.model_validate_json(v)
                for k, v in fields.items() if _text(k).startswith(AWAIT_PREFIX)}

    @redis_errors
    def definition(self, group: str, flow_id: str) -> OpenFlow | None:
        raw = self.client.hget(self.keys.group(group).flow(flow_id), "def")
        return None if raw is None else self._definition(_text(raw))

    @redis_errors
    def archived_frames(self, group: str, flow_id: str) -> dict[str, FrameState]:
        """The iterations and branches of a flow that ended, by address (for the flow's tree)."""
        fields = self.client.hgetall(self.keys.group(group).flow(flow_id))
        return {_text(k)[2:]: FrameState.model_validate_json(v) for k, v in fields.items()
                if _text(k).startswith("f:")}

    def _definition(self, text: str) -> OpenFlow:
        digest = hashlib.sha256(text.encode()).hexdigest()
        flow = self._defs.get(digest)
        if flow is None:
            if len(self._defs) >= _DEF_CACHE_SIZE:
                self._defs.clear()
            flow = self._defs[digest] = parse_flow(text)
        return flow

    # -- the advancer ------------------------------------------------------------------------

    def advance_one(self, group: str, flow_id: str) -> bool:
        """Apply the event at the head of the flow's events; False when there is none."""
        return self._advance(group, flow_id, batch=1) is not None

    @redis_errors
    def _advance(self, group: str, flow_id: str, *, batch: int = EVENT_BATCH,
                 outbox_first: bool = False) -> tuple[int, int, list[bytes]] | None:
        """Apply the first events (up to ``batch``) in one transition: (events applied, events
        remaining, the outbox's first actions); None if there is none. With ``outbox_first``,
        :data:`LEFTOVER` when actions are left in the outbox (a dispatcher died): they are
        to be carried out first (:meth:`process`); the same read tells, no round trip of its own.

        Reads, computes and commits; when another advancer committed in between,
        reads again. The store keeps the state it committed last for each flow (a few
        dozen flows): the next event's read is then the version alone, not the definition
        and the state, and the kept state is not parsed again; it is used only when the
        version is still the one this store wrote. The events are removed by the same
        commit that applies them. A burst of events (a parallel loop's completions) is one
        read, one state parsed and written, one commit, instead of one each: a large state
        costs once per burst.
        """
        g = self.keys.group(group)
        keys = [g.flow(flow_id), g.flow_events(flow_id), g.flow_outbox(flow_id), g.flows_running,
                g.flow_timers]
        while True:
            # The state this store committed last for the flow, if it has it: only the version
            # is read, and it is used only if no one committed since (it is taken out while used).
            cached = self._states.pop(flow_id, None)
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(keys[0], ["version"] if cached else ["version", "def", "state"])
            pipe.lrange(keys[1], 0, batch - 1)
            pipe.llen(keys[2])
            fields, heads, leftover = pipe.execute()
            version = fields[0]
            if cached is not None and (version is None or _text(version) != cached[0]):
                continue  # another advancer committed (or the flow is gone): read it whole
            if outbox_first and leftover:
                if cached is not None:
                    self._states[flow_id] = cached
                return LEFTOVER
            if not heads or (cached is None and fields[2] is None):
                if cached is not None:
                    self._states[flow_id] = cached
                return None
            if cached is None:
                flow = self._definition(_text(fields[1]))
                new_state, actions, applied = self._transition(flow, fields[2], heads)
            else:
                flow = cached[1]
                try:
                    new_state, actions = self._apply(flow, cached[2], heads)
                except Exception:
                    continue  # the cached state is spent: read it whole, _transition words the error
                applied = len(heads)
            # A finished flow's keys live as long as its record (instance setting retention_s).
            terminal = "0" if new_state.status == "running" else str(max(1, self.retention_s))
            archived, new_state.archived = new_state.archived, []
            args = [_text(version), heads[0], new_state.model_dump_json(), flow_id, self.clock(),
                    terminal, applied, heads[applied - 1], len(archived)]
            for frame in archived:
                args += [f"f:{frame.addr}", frame.model_dump_json()]
            args += [a.model_dump_json() for a in actions]
            reply = FLOW_COMMIT(self.client, keys, args)
            if int(reply[0]) >= 0:
                if terminal == "0":
                    if len(self._states) >= _STATE_CACHE_SIZE:
                        self._states.clear()
                    self._states[flow_id] = (str(int(version) + 1), flow, new_state)
                return applied, int(reply[0]), list(reply[1:])

    def _apply(self, flow: OpenFlow, state: FlowState,
               heads: list[bytes]) -> tuple[FlowState, list[Action]]:
        """The state after the events ``heads`` (in order) and their actions; ``state`` is changed."""
        if self.evaluator is None:
            raise TypeError("this FlowStore reads flows only: it was given no expression evaluator")
        actions: list[Action] = []
        for head in heads:
            state, more = advance(flow, state, _EVENTS.validate_json(head), now=self.clock(),
                                  evaluator=self.evaluator, owned=True)
            actions += more
        return state, actions

    def _transition(self, flow: OpenFlow, raw_state: bytes,
                    heads: list[bytes]) -> tuple[FlowState, list[Action], int]:
        """The state after the events ``heads`` (in order), their actions, and how many applied.

        An unexpected error in a batch of several is retried with the first event alone,
        so the events before a faulty one are applied and the faulty one fails the flow.
        """
        if self.evaluator is None:
            raise TypeError("this FlowStore reads flows only: it was given no expression evaluator")
        try:
            state, actions = self._apply(flow, FlowState.model_validate_json(raw_state), heads)
            return state, actions, len(heads)
        except Exception as exc:  # a bug must not leave the event at the head forever
            if len(heads) > 1:
                return self._transition(flow, raw_state, heads[:1])
            error = {"name": "InternalError", "message": f"{type(exc).__name__}: {exc}"}
            failed, actions = fail_flow(FlowState.model_validate_json(raw_state), error)
            return failed, actions, 1

    @redis_errors
    def dispatch(self, group: str, flow_id: str, launcher: StepLauncher, *, batch: int = 100) -> int:
        """Carry out the committed actions in order, then remove those done; how many."""
        g = self.keys.group(group)
        outbox = g.flow_outbox(flow_id)
        done = 0
        while heads := self.client.lrange(outbox, 0, batch - 1):
            done += self._carry_out_heads(group, flow_id, heads, launcher)
            if len(heads) < batch:
                break
        return done

    def _carry_out_heads(self, group: str, flow_id: str, heads: list[bytes], launcher: StepLauncher) -> int:
        """Carry out these first actions of the outbox, then remove them (those done, in order)."""
        g = self.keys.group(group)
        carried: list[ScriptArg] = []
        try:
            for head in heads:
                self._carry_out(group, flow_id, _ACTIONS.validate_json(head), launcher)
                carried.append(head)
        finally:
            if carried:  # what was done is not done again, even if the next one failed
                POP_IF_HEAD(self.client, [g.flow_outbox(flow_id)], carried)
        return len(carried)

    def _carry_out(self, group: str, flow_id: str, action: Action, launcher: StepLauncher) -> None:
        if isinstance(action, StartJob):
            launcher.start_job(flow_id, action)
        elif isinstance(action, CancelJobs):
            launcher.cancel_jobs(flow_id, action.jobs)
        elif isinstance(action, AwaitResume):
            # The rules of the wait (who may approve), for the resume endpoints and the UI.
            g = self.keys.group(group)
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(g.flow(flow_id), f"{AWAIT_PREFIX}{action.step}", action.model_dump_json())
            pipe.zadd(g.flow_timers, {f"{flow_id} {action.key}": action.timeout_at})
            pipe.execute()
        elif isinstance(action, EarlyReturn):
            launcher.early_return(flow_id, action)
        elif isinstance(action, FlowCompleted):
            launcher.complete_flow(flow_id, action)

    @redis_errors
    def process(self, group: str, flow_id: str, launcher: StepLauncher, *, max_events: int = 10_000) -> int:
        """Carry out leftover actions, then apply every pending event and its actions; how many events."""
        applied = 0
        leftovers = 0
        while applied < max_events:
            advanced = self._advance(group, flow_id, outbox_first=leftovers < _LEFTOVER_ROUNDS)
            if advanced is LEFTOVER:
                # Actions left over by a dispatcher that died: carried out before any event.
                leftovers += 1
                self.dispatch(group, flow_id, launcher)
                continue
            if advanced is None:
                break
            applied += advanced[0]
            remaining, heads = advanced[1:]
            # The commit answered the outbox's head: no read before carrying it out.
            if heads and self._carry_out_heads(group, flow_id, heads, launcher) == _COMMIT_OUTBOX_HEADS:
                self.dispatch(group, flow_id, launcher)  # a long outbox: the rest
            if remaining == 0:
                break
        return applied

    @redis_errors
    def take(self, group: str, advancer_id: str, timeout_s: float, *,
             release: str | None = None) -> str | None:
        """Wait for a flow with events; it stays in the advancer's processing list until released.

        ``release``: the flow this advancer is done with, released in the same round trip.
        """
        g = self.keys.group(group)
        processing = g.flow_processing(advancer_id)
        if release is None:
            flow_id = self.client.blmove(g.flow_queue, processing, timeout_s, "LEFT", "RIGHT")
        else:
            pipe = self.client.pipeline(transaction=False)
            pipe.lrem(processing, 1, release)
            pipe.blmove(g.flow_queue, processing, timeout_s, "LEFT", "RIGHT")
            flow_id = pipe.execute()[1]
        return None if flow_id is None else _text(flow_id)

    @redis_errors
    def release(self, group: str, advancer_id: str, flow_id: str) -> None:
        self.client.lrem(self.keys.group(group).flow_processing(advancer_id), 1, flow_id)

    @redis_errors
    def fire_due_timers(self, group: str, now: int, limit: int = 100) -> int:
        """Turn due timers (suspend timeouts) into events of their flows; how many fired."""
        g = self.keys.group(group)
        fired = 0
        for member in self.client.zrangebyscore(g.flow_timers, "-inf", now, start=0, num=limit):
            flow_id, _, key = _text(member).partition(" ")
            event = TimerFired(key=key).model_dump_json()
            fired += FLOW_TIMER(self.client, [g.flow_timers, g.flow_events(flow_id), g.flow_queue,
                                              g.flow(flow_id)], [member, flow_id, event])
        return fired

    @redis_errors
    def next_duties(self, group: str) -> tuple[int | None, int | None]:
        """(the earliest timer's due ms, the oldest running flow's last commit ms), None for
        none: when :meth:`fire_due_timers` and :meth:`sweep` can next have work (one round trip)."""
        g = self.keys.group(group)
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(g.flow_timers, 0, 0, withscores=True)
        pipe.zrange(g.flows_running, 0, 0, withscores=True)
        timer, running = pipe.execute()
        return (int(timer[0][1]) if timer else None, int(running[0][1]) if running else None)

    @redis_errors
    def next_cancel(self, control: str, timeout_s: float) -> str | None:
        """Wait up to ``timeout_s`` for the next element of a control list (a flow job's cancel)."""
        answer = self.client.blpop([control], timeout=timeout_s)
        return None if answer is None else _text(answer[1])

    @redis_errors
    def wake(self, lists: list[str], element: str) -> None:
        """Push ``element`` onto each of ``lists`` (the group's flow queue, its flow control
        list) that holds none yet: a waiter blocked on it (of any scheduler) takes it and only
        ends its wait. A stopping scheduler calls this again while its waiters run, so a
        list keeps at most one (give or take a race) however long they take to end."""
        for key in lists:
            if self.client.lpos(key, element) is None:
                self.client.rpush(key, element)

    @redis_errors
    def recover_advancer(self, group: str, advancer_id: str) -> int:
        """Give the flows a dead advancer held back to the queue (same slot: one LMOVE each)."""
        g = self.keys.group(group)
        return move_all_back(self.client, g.flow_processing(advancer_id), g.flow_queue)

    @redis_errors
    def sweep(self, group: str, *, stale_after_ms: int, outcome_of: OutcomeLookup, limit: int = 100) -> int:
        """Re-deliver the outcomes of finished steps that their flow still waits for.

        The safety net under the hand-off: a flow that has committed nothing for
        ``stale_after_ms`` has each of its live step jobs looked up (``outcome_of``
        reads the job's record wherever its group is); a finished one is sent to
        the flow again. A copy of an event already queued is ignored by the
        transition, so the sweep never needs to know whether the first delivery
        was lost. A silent flow with events or actions pending is queued again. Returns how
        many outcomes it sent.
        """
        g = self.keys.group(group)
        now = self.clock()
        sent = 0
        for raw_id in self.client.zrangebyscore(g.flows_running, "-inf", now - stale_after_ms, start=0,
                                                num=limit):
            flow_id = _text(raw_id)
            state = self.state(group, flow_id)
            if state is None or state.status != "running":
                self.client.zrem(g.flows_running, flow_id)
                continue
            for job_id in state.jobs:
                outcome = outcome_of(job_id)
                if outcome is not None:
                    sent += self.send(group, flow_id, outcome.event())
            if self.client.llen(g.flow_events(flow_id)) or self.client.llen(g.flow_outbox(flow_id)):
                # Events or actions left while no advancer holds the flow (its take was lost,
                # an action failed): queue the flow again, so they are not left for good.
                self.client.rpush(g.flow_queue, flow_id)
            # Looked at now: the next look is one stale period away, unless it commits before.
            self.client.zadd(g.flows_running, {flow_id: now}, xx=True)
        return sent
