"""The pure transition: (definition, state, event) -> (new state, actions).

Nothing here reads a clock, Redis or a random source: ``now`` is passed in,
expressions go through the given evaluator, job ids and retry jitter are
derived from the flow id and the step's address. So a transition replayed
after a crash gives the same state and names the same jobs, and every case is
tested from a table (``tests/unit/test_flow_transition.py``).

How a flow moves: a frame (the flow, an iteration, a branch) runs its modules
in order. A leaf module (``rawscript``, ``script``, ``flow``) starts a job and
waits for its completion event; ``identity``, a skipped or a mocked module
completes at once; a loop or branch module starts frames of its own and
completes when they have. When a module completes it may wait for approvals
(``suspend``), stop its frame (``stop_after_if``), delay the next job
(``sleep``); then the frame moves on. A failed module is retried by its
policy, then either continues (``continue_on_error``) or fails its frame, and
the failure climbs to the flow, which runs its ``failure_module`` if it has
one. Events for jobs the state no longer waits for are ignored, so an event
delivered twice changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from flows.containers import Containers
from flows.errors import ExpressionError
from flows.expr import Evaluator
from flows.model import (
    DEFAULT_SUSPEND_TIMEOUT_S,
    BranchAll,
    BranchOne,
    FlowModule,
    ForloopFlow,
    InputTransform,
    JavascriptTransform,
    OpenFlow,
    PathFlow,
    PathScript,
    RawScript,
    WhileloopFlow,
)
from flows.retrying import retry_delay_s
from flows.state import (
    FLOW_TIMEOUT,
    TERMINAL_MODULE,
    Action,
    AwaitResume,
    Cancel,
    CancelJobs,
    EarlyReturn,
    Event,
    FlowCompleted,
    FlowState,
    FrameState,
    FrameStatus,
    JobCompleted,
    ModuleState,
    Resumed,
    Start,
    StartJob,
    TimerFired,
)
from flows.tree import FAILURE_ADDR, Cursor, as_int, context, find, flow_error, locate, module_addr


def initial_state(flow_id: str, args: dict[str, Any]) -> FlowState:
    """The state of a flow job before its Start event."""
    return FlowState(flow_id=flow_id, args=args)


def step_job_id(flow_id: str, step: str, attempt: int) -> str:
    """The id of a step job: the same for the same flow, address and attempt."""
    try:
        namespace = uuid.UUID(flow_id)
    except ValueError:
        namespace = uuid.uuid5(uuid.NAMESPACE_URL, flow_id)
    return str(uuid.uuid5(namespace, f"{step}#{attempt}"))


def advance(flow: OpenFlow, state: FlowState, event: Event, *, now: int, evaluator: Evaluator,
            owned: bool = False) -> tuple[FlowState, list[Action]]:
    """The new state and the actions that ``event`` leads to; ``state`` is left unchanged.

    ``owned=True`` hands ``state`` over to be changed in place (the caller just
    parsed it and will not look at it again): a large flow's state is then not
    copied once more.
    """
    # A JSON round trip copies far faster than deepcopy (pydantic-core does it).
    mine = state if owned else FlowState.model_validate_json(state.model_dump_json())
    run = _Run(flow, mine, now, evaluator)
    run.handle(event)
    # One CancelJobs for everything a transition cancels.
    canceled = [job for action in run.actions if isinstance(action, CancelJobs) for job in action.jobs]
    actions: list[Action] = [a for a in run.actions if not isinstance(a, CancelJobs)]
    if canceled:
        actions.insert(0, CancelJobs(jobs=canceled))
    return run.state, actions


def fail_flow(state: FlowState, error: dict[str, Any]) -> tuple[FlowState, list[Action]]:
    """End a running flow as failed (its live steps canceled): what an unexpected error leads to."""
    if state.status != "running":
        return state, []
    failed = state.model_copy(deep=True)
    actions: list[Action] = []
    if failed.jobs:
        actions.append(CancelJobs(jobs=list(failed.jobs)))
        failed.jobs = {}
    failed.status, failed.error = "failure", error
    actions.append(FlowCompleted(status="failure", error=error))
    return failed, actions


@dataclass
class _Run(Containers):
    flow: OpenFlow
    state: FlowState
    now: int
    ev: Evaluator
    actions: list[Action] = field(default_factory=list)
    _pumping: set[str] = field(default_factory=set)

    # --- events ---------------------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if self.state.status != "running":
            return  # a completed flow takes no more events
        if isinstance(event, Start):
            self._start()
        elif isinstance(event, JobCompleted):
            self._job_completed(event)
        elif isinstance(event, Resumed):
            self._resumed(event)
        elif isinstance(event, TimerFired):
            self._timer(event)
        elif isinstance(event, Cancel):
            self._cancel(event)

    def _start(self) -> None:
        if self.state.started:
            return
        self.state.started = True
        self.state.root.input = self.state.args
        skip = self.flow.value.skip_expr
        if skip:
            try:
                if self.ev.truthy(skip, {"flow_input": self.state.args}, step="skip_expr"):
                    self.state.stopped = self.state.skipped = True
                    self._complete("success", result="stopped early")
                    return
            except ExpressionError as exc:
                self._complete("failure", error=flow_error("ExpressionError", str(exc)))
                return
        self._run_frame(Cursor(self.state.root, self.flow.value.modules))

    def _job_completed(self, event: JobCompleted) -> None:
        addr = self.state.jobs.pop(event.job, None)
        if addr is None:
            return  # a duplicate, or the answer of a job canceled since
        cur, mdef, ms = locate(self.flow, self.state, addr)
        if event.success:
            ms.status, ms.result = "success", event.result
        else:
            self._leaf_failed(cur, mdef, ms, event.error or flow_error("Error", "the step failed"))
        if ms.status != "running":
            self._run_frame(cur)

    def _resumed(self, event: Resumed) -> None:
        found = find(self.flow, self.state, event.step)
        if found is None or not found[2].suspended:
            return
        cur, mdef, ms = found
        if not event.approved:
            self._end_suspend(cur, mdef, ms, "SuspendedDisapproved", f"step {ms.addr} was disapproved")
            return
        ms.resumes.append(event.payload)
        ms.approvers.append(event.approver)
        assert mdef.suspend is not None
        if len(ms.resumes) >= mdef.suspend.required_events:
            ms.suspended = False
            ms.status = "success"
            self._run_frame(cur)

    def _timer(self, event: TimerFired) -> None:
        if event.key == FLOW_TIMEOUT:
            self._time_out()
            return
        kind, _, addr = event.key.partition(":")
        found = find(self.flow, self.state, addr) if kind == "suspend" else None
        if found is None or not found[2].suspended:
            return
        cur, mdef, ms = found
        self._end_suspend(cur, mdef, ms, "SuspendedTimedOut", f"step {ms.addr} was not resumed in time")

    def _end_suspend(self, cur: Cursor, mdef: FlowModule, ms: ModuleState, name: str, message: str) -> None:
        assert mdef.suspend is not None
        ms.suspended = False
        error = flow_error(name, message, ms.addr)
        self._fail_module(mdef, ms, error, proceed=mdef.suspend.continue_on_disapprove_timeout)
        self._run_frame(cur)

    def _cancel(self, event: Cancel) -> None:
        self._cancel_all()
        reason = event.reason or "canceled"
        self._complete("canceled", error=flow_error("Canceled", f"{reason} (by {event.by or 'unknown'})"))

    def _time_out(self) -> None:
        """The flow job's own timeout_s: its running steps are canceled, none other starts, and
        the flow fails (its failure_module does not run: the flow has no time left for it)."""
        self._cancel_all()
        limit = f" of {self.state.timeout_s} s" if self.state.timeout_s else ""
        self._complete("failure", error=flow_error(
            "Timeout", f"the flow exceeded its timeout{limit}: its running steps were canceled "
                       f"and no other step starts"))

    def _cancel_all(self) -> None:
        self._cancel_frame(self.state.root)
        if self.state.failure_frame is not None:
            self._cancel_frame(self.state.failure_frame)

    # --- frames -----------------------------------------------------------------------------------------

    def _run_frame(self, cur: Cursor) -> None:
        """Move the frame on until it waits for something or ends."""
        frame = cur.frame
        while frame.status == "running":
            if frame.pos >= len(cur.defs):
                last = frame.modules[-1].result if frame.modules else frame.input
                self._finish_frame(cur, "success", result=last)
                return
            mdef = cur.defs[frame.pos]
            if len(frame.modules) <= frame.pos:
                frame.modules.append(ModuleState(id=mdef.id, addr=module_addr(frame, mdef.id)))
            ms = frame.modules[frame.pos]
            if ms.status == "waiting":
                self._enter(cur, mdef, ms)
            if ms.status not in TERMINAL_MODULE or ms.suspended:
                return
            self._settle(cur, mdef, ms)
            if ms.suspended:
                return

    def _settle(self, cur: Cursor, mdef: FlowModule, ms: ModuleState) -> None:
        """A module of ``cur`` has ended: suspend, stop, sleep, or fail the frame; else move on."""
        frame = cur.frame
        if ms.status == "failure" and not ms.continued:
            self._finish_frame(cur, "failure", error=ms.error)
            return
        ctx = context(self.state.args, cur, frame.pos)
        suspend = mdef.suspend
        if (ms.status == "success" and suspend is not None and suspend.required_events > 0
                and not ms.skipped and len(ms.resumes) < suspend.required_events):
            groups: list[str] = []
            if suspend.user_groups_required is not None:
                try:
                    found = self._transform(suspend.user_groups_required, {**ctx, "result": ms.result},
                                            f"{ms.addr} (user_groups_required)")
                except ExpressionError as exc:
                    ms.status, ms.error = "failure", flow_error("ExpressionError", str(exc), ms.addr)
                    self._finish_frame(cur, "failure", error=ms.error)
                    return
                if isinstance(found, list):
                    groups = [str(group) for group in found]
                elif found is not None:
                    groups = [str(found)]
            ms.suspended = True
            timeout_s = suspend.timeout if suspend.timeout is not None else DEFAULT_SUSPEND_TIMEOUT_S
            self.actions.append(AwaitResume(
                step=ms.addr, job=ms.job, required_events=suspend.required_events,
                timeout_at=self.now + timeout_s * 1000, key=f"suspend:{ms.addr}",
                user_auth_required=suspend.user_auth_required, user_groups_required=groups,
                self_approval_disabled=suspend.self_approval_disabled,
            ))
            return
        if (self.flow.value.early_return == mdef.id and cur.frame is self.state.root
                and not self.state.early_returned):
            self.state.early_returned = True
            self.actions.append(EarlyReturn(step=ms.addr, result=ms.result))
        is_loop = isinstance(mdef.value, ForloopFlow | WhileloopFlow)
        stop = mdef.stop_after_all_iters_if if is_loop else mdef.stop_after_if
        if stop is not None and not ms.skipped:
            try:
                hit = self.ev.truthy(stop.expr, {**ctx, "result": ms.result, "all_iters": ms.result},
                                     step=ms.addr)
            except ExpressionError as exc:
                ms.status, ms.error = "failure", flow_error("ExpressionError", str(exc), ms.addr)
                self._finish_frame(cur, "failure", error=ms.error)
                return
            if hit:
                ms.error = None
                if stop.error_message is not None:
                    message = stop.error_message or f"Flow early stop: {stop.expr}"
                    self._finish_frame(cur, "failure", error=flow_error("FlowEarlyStop", message, ms.addr))
                else:
                    if cur.parent is None and stop.skip_if_stopped:
                        self.state.skipped = True
                    self._finish_frame(cur, "stopped", result=ms.result)
                return
        if mdef.sleep is not None and not ms.skipped:
            try:
                seconds = self._transform(mdef.sleep, ctx, f"{ms.addr} (sleep)")
                frame.not_before = self.now + int(float(seconds or 0) * 1000)
            except (ExpressionError, TypeError, ValueError) as exc:
                ms.status, ms.error = "failure", flow_error("ExpressionError", str(exc), ms.addr)
                self._finish_frame(cur, "failure", error=ms.error)
                return
        frame.pos += 1

    def _finish_frame(self, cur: Cursor, status: FrameStatus, *, result: Any = None,
                      error: dict[str, Any] | None = None) -> None:
        frame = cur.frame
        frame.status = status
        frame.result, frame.error = result, error
        if status == "failure":
            self._cancel_frame(frame, mark=False)
        if cur.parent is not None:
            assert cur.owner is not None and cur.owner_state is not None
            self._pump(cur.parent, cur.owner, cur.owner_state, continue_parent=True)
        elif frame is self.state.root:
            self._root_done()
        else:
            self._failure_module_done()

    def _root_done(self) -> None:
        root = self.state.root
        if root.status in ("success", "stopped"):
            self.state.stopped = root.status == "stopped"
            self._complete("success", result=root.result)
            return
        error = root.error or flow_error("Error", "the flow failed")
        failure = self.flow.value.failure_module
        if failure is None:
            self._complete("failure", error=error)
            return
        self.state.error = error
        self.state.failure_frame = FrameState(addr=FAILURE_ADDR, input=error)
        self._run_frame(Cursor(self.state.failure_frame, [failure]))

    def _failure_module_done(self) -> None:
        frame = self.state.failure_frame
        assert frame is not None
        original = self.state.error or flow_error("Error", "the flow failed")
        if frame.status in ("success", "stopped"):
            if isinstance(frame.result, dict) and frame.result.get("recover") is True:
                self._complete("success", result=frame.result)
            else:
                self._complete("failure", error={**original, "failure_module_result": frame.result})
        else:
            self._complete("failure", error={**original, "failure_module_error": frame.error})

    def _complete(self, status: Literal["success", "failure", "canceled"], *, result: Any = None,
                  error: dict[str, Any] | None = None) -> None:
        self.state.status = status
        self.state.result, self.state.error = result, error
        self.actions.append(FlowCompleted(status=status, result=result, error=error))

    # --- entering a module ----------------------------------------------------------------------------

    def _enter(self, cur: Cursor, mdef: FlowModule, ms: ModuleState) -> None:
        ctx = context(self.state.args, cur, cur.frame.pos)
        previous = ctx["previous_result"]
        try:
            if mdef.skip_if is not None and self.ev.truthy(mdef.skip_if.expr, ctx, step=ms.addr):
                ms.status, ms.result, ms.skipped = "success", previous, True
                return
            if mdef.mock is not None and mdef.mock.enabled:
                ms.status, ms.result = "success", mdef.mock.return_value
                return
            value = mdef.value
            if isinstance(value, RawScript | PathScript | PathFlow):
                self._start_job(cur, mdef, ms, ctx)
            elif isinstance(value, ForloopFlow):
                self._enter_forloop(cur, mdef, ms, value, ctx)
            elif isinstance(value, WhileloopFlow):
                ms.status = "running"
                self._pump(cur, mdef, ms, continue_parent=False)
            elif isinstance(value, BranchOne):
                chosen = len(value.branches)
                for index, branch in enumerate(value.branches):
                    if self.ev.truthy(branch.expr, ctx, step=f"{ms.addr} (branch {index})"):
                        chosen = index
                        break
                ms.branch_chosen, ms.status = chosen, "running"
                self._pump(cur, mdef, ms, continue_parent=False)
            elif isinstance(value, BranchAll):
                ms.status = "running"
                ms.parallelism = max(1, len(value.branches)) if value.parallel else 1
                self._pump(cur, mdef, ms, continue_parent=False)
            else:  # identity
                ms.status, ms.result = "success", previous
        except ExpressionError as exc:
            self._cancel_module(ms)
            self._fail_module(mdef, ms, flow_error("ExpressionError", str(exc), ms.addr))

    def _start_job(self, cur: Cursor, mdef: FlowModule, ms: ModuleState, ctx: dict[str, Any]) -> None:
        value = mdef.value
        assert isinstance(value, RawScript | PathScript | PathFlow)
        args = {name: self._transform(t, ctx, f"{ms.addr} (input {name})")
                for name, t in value.input_transforms.items()}
        timeout_s = None
        if mdef.timeout is not None:
            raw = self._transform(mdef.timeout, ctx, f"{ms.addr} (timeout)")
            timeout_s = None if raw is None else as_int(raw, mdef.timeout, f"{ms.addr} (timeout)")
        ms.attempts += 1
        ms.status = "running"
        ms.job = step_job_id(self.state.flow_id, ms.addr, ms.attempts)
        ms.args, ms.timeout_s = args, timeout_s
        self._emit_start(cur, mdef, ms, self.now)

    def _emit_start(self, cur: Cursor, mdef: FlowModule, ms: ModuleState, not_before: int) -> None:
        value = mdef.value
        assert ms.job is not None and isinstance(value, RawScript | PathScript | PathFlow)
        priority = mdef.priority if mdef.priority is not None else self.flow.value.priority
        action = StartJob(
            job=ms.job, step=ms.addr, module_id=mdef.id, attempt=ms.attempts, kind=value.type,
            args=ms.args or {}, scheduled_for=max(self.now, not_before, cur.frame.not_before),
            timeout_s=ms.timeout_s, priority=priority,
        )
        if isinstance(value, RawScript):
            action.language, action.content, action.lock, action.tag = (
                value.language, value.content, value.lock, value.tag)
        elif isinstance(value, PathScript):
            action.script_path, action.script_hash, action.tag = value.path, value.hash, value.tag_override
        elif isinstance(value, PathFlow):
            action.flow_path = value.path
        self.state.jobs[ms.job] = ms.addr
        self.actions.append(action)

    def _leaf_failed(self, cur: Cursor, mdef: FlowModule, ms: ModuleState, error: dict[str, Any]) -> None:
        assert ms.job is not None
        ms.failed_jobs.append(ms.job)
        delay = retry_delay_s(mdef.retry, len(ms.failed_jobs), ms.job)
        if delay is not None and mdef.retry is not None and mdef.retry.retry_if is not None:
            try:
                ctx = {**context(self.state.args, cur, cur.frame.pos),
                       "result": {"error": error}, "error": error}
                if not self.ev.truthy(mdef.retry.retry_if.expr, ctx, step=f"{ms.addr} (retry_if)"):
                    delay = None
            except ExpressionError as exc:
                error, delay = flow_error("ExpressionError", str(exc), ms.addr), None
        if delay is not None:
            ms.attempts += 1
            ms.job = step_job_id(self.state.flow_id, ms.addr, ms.attempts)
            self._emit_start(cur, mdef, ms, self.now + int(delay * 1000))
            return
        self._fail_module(mdef, ms, {**error, "step_id": ms.addr})

    def _fail_module(self, mdef: FlowModule, ms: ModuleState, error: dict[str, Any], *,
                     proceed: bool = False) -> None:
        """The module failed: its frame fails, unless continue_on_error lets the flow go on."""
        ms.status, ms.error = "failure", error
        if proceed or mdef.continue_on_error:
            ms.result, ms.continued = {"error": error}, True
        else:
            ms.result, ms.continued = None, False

    def _transform(self, transform: InputTransform, ctx: dict[str, Any], step: str) -> Any:
        if isinstance(transform, JavascriptTransform):
            return self.ev.evaluate(transform.expr, ctx, step=step)
        return transform.value
