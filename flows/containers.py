"""Loops and branches: starting their frames, taking each frame's outcome, ending them.

The part of the transition (``flows/transition.py``) that deals with
containers: a for-loop's iterations (sequential, or parallel up to its
parallelism), a while-loop's, the chosen branch of a ``branchone``, every
branch of a ``branchall``; and canceling what still runs under a frame.
"""

from __future__ import annotations

from typing import Any

from flows.errors import ExpressionError
from flows.expr import Evaluator
from flows.model import (
    BranchAll,
    BranchOne,
    FlowModule,
    ForloopFlow,
    InputTransform,
    OpenFlow,
    WhileloopFlow,
)
from flows.state import Action, CancelJobs, FlowState, FrameState, ModuleState
from flows.tree import Cursor, as_int, body, context, expr_of, flow_error, index_of

MAX_ITERATIONS = 10_000


class Containers:
    """Mixed into the transition's run; the hooks below are the run's own."""

    flow: OpenFlow
    state: FlowState
    now: int
    ev: Evaluator
    actions: list[Action]
    _pumping: set[str]

    def _run_frame(self, cur: Cursor) -> None:
        raise NotImplementedError

    def _fail_module(self, mdef: FlowModule, ms: ModuleState, error: dict[str, Any], *,
                     proceed: bool = False) -> None:
        raise NotImplementedError

    def _transform(self, transform: InputTransform, ctx: dict[str, Any], step: str) -> Any:
        raise NotImplementedError

    def _enter_forloop(self, cur: Cursor, mdef: FlowModule, ms: ModuleState, value: ForloopFlow,
                       ctx: dict[str, Any]) -> None:
        items = self._transform(value.iterator, ctx, f"{ms.addr} (iterator)")
        if not isinstance(items, list):
            raise ExpressionError(ms.addr, expr_of(value.iterator),
                                  f"the iterator is {type(items).__name__}, not an array")
        if len(items) > MAX_ITERATIONS:
            raise ExpressionError(ms.addr, expr_of(value.iterator),
                                  f"{len(items)} iterations, more than the limit of {MAX_ITERATIONS}")
        ms.iterator = items
        ms.parallelism = 1
        if value.parallel:
            raw = value.parallelism
            limit = raw if isinstance(raw, int) or raw is None else as_int(
                self._transform(raw, ctx, f"{ms.addr} (parallelism)"), raw, f"{ms.addr} (parallelism)")
            ms.parallelism = limit if limit and limit > 0 else max(1, len(items))
        ms.status = "running"
        self._pump(cur, mdef, ms, continue_parent=False)

    def _pump(self, cur: Cursor, mdef: FlowModule, ms: ModuleState, *, continue_parent: bool) -> None:
        """Take ended child frames into account and start new ones, until nothing changes.

        A child frame that ends while its container is being pumped (an identity
        body, say) is picked up by the loop here instead of by recursion, so a
        long loop of instant iterations does not deepen the stack.
        """
        if ms.addr in self._pumping:
            return
        self._pumping.add(ms.addr)
        try:
            while ms.status == "running":
                ended = next((i for i, f in enumerate(ms.frames) if f.status != "running"), None)
                if ended is not None:
                    frame = ms.frames.pop(ended)
                    self.state.archived.append(frame)
                    self._collect(cur, mdef, ms, frame)
                    continue
                running = len(ms.frames)  # every frame left is running
                total = self._frame_count(mdef, ms)
                if not ms.broken and running < ms.parallelism and (total is None or ms.started < total):
                    self._start_frame(cur, mdef, ms)
                    continue
                if running == 0:
                    self._container_done(mdef, ms)
                break
        finally:
            self._pumping.discard(ms.addr)
        if continue_parent and ms.status != "running":
            self._run_frame(cur)

    def _frame_count(self, mdef: FlowModule, ms: ModuleState) -> int | None:
        value = mdef.value
        if isinstance(value, ForloopFlow):
            return len(ms.iterator or [])
        if isinstance(value, BranchAll):
            return len(value.branches)
        if isinstance(value, BranchOne):
            return 1
        return None  # a while loop runs until stopped

    def _start_frame(self, cur: Cursor, mdef: FlowModule, ms: ModuleState) -> None:
        index = ms.started
        value = mdef.value
        iter_ctx = None
        if isinstance(value, ForloopFlow):
            assert ms.iterator is not None
            iter_ctx = {"index": index, "value": ms.iterator[index]}
        elif isinstance(value, WhileloopFlow):
            if index >= MAX_ITERATIONS:
                limit = flow_error("LoopLimit", f"more than {MAX_ITERATIONS} iterations", ms.addr)
                self._fail_module(mdef, ms, limit)
                return
            iter_ctx = {"index": index, "value": index}
        branch = ms.branch_chosen if isinstance(value, BranchOne) else index
        assert branch is not None
        previous = context(self.state.args, cur, cur.frame.pos)["previous_result"]
        frame = FrameState(addr=f"{ms.addr}/{branch}", input=previous, iter=iter_ctx,
                           not_before=cur.frame.not_before)
        ms.frames.append(frame)
        ms.started += 1
        self._run_frame(Cursor(frame, body(mdef, branch), cur, mdef, ms))

    def _collect(self, cur: Cursor, mdef: FlowModule, ms: ModuleState, frame: FrameState) -> None:
        """One child frame ended: fail, break or go on."""
        value = mdef.value
        if frame.status == "canceled":
            return
        if frame.status == "failure":
            tolerated = (isinstance(value, ForloopFlow | WhileloopFlow) and value.skip_failures) or (
                isinstance(value, BranchAll) and value.branches[index_of(frame)].skip_failure)
            if tolerated:
                failed = {"error": frame.error} if isinstance(value, BranchAll) else None
                ms.outcomes[index_of(frame)] = failed
                return
            for other in ms.frames:
                if other.status == "running":
                    self._cancel_frame(other)
            self._fail_module(mdef, ms, frame.error or flow_error("Error", "a branch failed", ms.addr))
            return
        ms.outcomes[index_of(frame)] = frame.result
        if isinstance(value, ForloopFlow | WhileloopFlow) and mdef.stop_after_if is not None:
            # Seen from inside the iteration that ended: its iter, its results, and result.
            inside = Cursor(frame, body(mdef, index_of(frame)), cur, mdef, ms)
            ctx = {**context(self.state.args, inside, len(frame.modules)), "result": frame.result}
            try:
                hit = self.ev.truthy(mdef.stop_after_if.expr, ctx, step=ms.addr)
            except ExpressionError as exc:
                self._fail_module(mdef, ms, flow_error("ExpressionError", str(exc), ms.addr))
                return
            if hit:
                ms.broken = True
                for other in ms.frames:
                    if other.status == "running":
                        self._cancel_frame(other)

    def _container_done(self, mdef: FlowModule, ms: ModuleState) -> None:
        if isinstance(mdef.value, BranchOne):
            ms.result = next(iter(ms.outcomes.values()), None)
        else:
            ms.result = [ms.outcomes[index] for index in sorted(ms.outcomes)]
        ms.status = "success"

    # --- canceling --------------------------------------------------------------------------------------

    def _cancel_frame(self, frame: FrameState, *, mark: bool = True) -> None:
        """Cancel every job still running under ``frame`` (and mark the frame canceled)."""
        if mark and frame.status == "running":
            frame.status = "canceled"
        for ms in frame.modules:
            self._cancel_module(ms)

    def _cancel_module(self, ms: ModuleState) -> None:
        if ms.status == "running" or ms.suspended:
            if ms.job is not None and self.state.jobs.pop(ms.job, None) is not None:
                self.actions.append(CancelJobs(jobs=[ms.job]))
            ms.status, ms.suspended = "canceled", False
        for frame in ms.frames:
            self._cancel_frame(frame)
