"""Finding one's way in a flow's state: addresses, cursors, and what an expression sees (pure).

A cursor is a frame with its module definitions and the container module
that owns it; :func:`locate` walks from the root (or the failure frame) to
the module at an address; :func:`context` gathers what an expression of one
module sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flows.errors import ExpressionError
from flows.model import (
    FlowModule,
    ForloopFlow,
    InputTransform,
    JavascriptTransform,
    OpenFlow,
    WhileloopFlow,
    bodies_of,
)
from flows.state import FlowState, FrameState, ModuleState

FAILURE_ADDR = "!"


@dataclass
class Cursor:
    """A frame with its module definitions, and the container module that owns it."""

    frame: FrameState
    defs: list[FlowModule]
    parent: Cursor | None = None
    owner: FlowModule | None = None
    owner_state: ModuleState | None = None


def flow_error(name: str, message: str, step: str | None = None) -> dict[str, Any]:
    """An error object as steps and flows carry it."""
    err: dict[str, Any] = {"name": name, "message": message}
    if step is not None:
        err["step_id"] = step
    return err


def module_addr(frame: FrameState, module_id: str) -> str:
    return f"{frame.addr}/{module_id}" if frame.addr else module_id


def index_of(frame: FrameState) -> int:
    """The branch or iteration index of a child frame, from its address."""
    return int(frame.addr.rsplit("/", 1)[1])


def body(mdef: FlowModule, index: int) -> list[FlowModule]:
    """The modules of iteration or branch ``index`` of a container module."""
    value = mdef.value
    if isinstance(value, ForloopFlow | WhileloopFlow):
        return value.modules
    return bodies_of(value)[index]


def locate(flow: OpenFlow, state: FlowState, addr: str) -> tuple[Cursor, FlowModule, ModuleState]:
    """The module state at ``addr``, its definition and its frame; LookupError if there is none."""
    parts = addr.split("/")
    if parts[0] == FAILURE_ADDR:
        failure = flow.value.failure_module
        if state.failure_frame is None or failure is None:
            raise LookupError(addr)
        cur = Cursor(state.failure_frame, [failure])
        parts = parts[1:]
    else:
        cur = Cursor(state.root, flow.value.modules)
    while parts:
        mid = parts[0]
        mdef = next((m for m in cur.defs if m.id == mid), None)
        ms = next((m for m in cur.frame.modules if m.id == mid), None)
        if mdef is None or ms is None:
            break
        if len(parts) == 1:
            return cur, mdef, ms
        want = f"{ms.addr}/{parts[1]}"
        frame = next((f for f in ms.frames if f.addr == want), None)
        if frame is None:
            break
        cur = Cursor(frame, body(mdef, index_of(frame)), cur, mdef, ms)
        parts = parts[2:]
    raise LookupError(addr)


def find(flow: OpenFlow, state: FlowState, addr: str) -> tuple[Cursor, FlowModule, ModuleState] | None:
    """:func:`locate`, or None for an address that names nothing (a resume for a wrong step)."""
    try:
        return locate(flow, state, addr)
    except LookupError:
        return None


def context(args: dict[str, Any], cur: Cursor, pos: int) -> dict[str, Any]:
    """What expressions of the module at ``pos`` of ``cur`` see."""
    chain: list[Cursor] = []
    walk: Cursor | None = cur
    while walk is not None:
        chain.append(walk)
        walk = walk.parent
    flow_input = dict(args)
    results: dict[str, Any] = {}
    for level in reversed(chain):
        if level.frame.iter is not None:
            if "iter" in flow_input:
                flow_input["iter_parent"] = flow_input["iter"]
            flow_input["iter"] = level.frame.iter
        for ms in level.frame.modules:
            if ms.status == "success" or ms.continued:
                results[ms.id] = ms.result
    frame = cur.frame
    previous = frame.modules[pos - 1] if 0 < pos <= len(frame.modules) else None
    ctx: dict[str, Any] = {
        "flow_input": flow_input,
        "results": results,
        "previous_result": previous.result if previous is not None else frame.input,
    }
    if previous is not None and previous.resumes:
        ctx.update(resume=previous.resumes[-1], resumes=previous.resumes, approvers=previous.approvers)
    else:
        ctx.update(resume=None, resumes=[], approvers=[])
    return ctx


def as_int(value: Any, transform: InputTransform, step: str) -> int:
    """A transform's value as a whole number (timeout, parallelism); ExpressionError if none."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExpressionError(step, expr_of(transform), f"{value!r} is not a number")
    return int(value)


def expr_of(transform: InputTransform) -> str:
    """The text to name a transform by in an error."""
    return transform.expr if isinstance(transform, JavascriptTransform) else repr(transform.value)
