"""A flow's steps as rows of a tree, for `job get <flow id>` and the API (pure).

The rows come from the state and the archived frames (``FlowStore.archived_frames``),
in the order of the definition: each module, and under a loop or branch its
iterations or branches in index order, each with its modules. A row carries
what the CLI shows (status, job id, attempts, branch chosen, iteration); the
caller adds durations from the step jobs' records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flows.state import FlowState, FrameState, ModuleState


@dataclass(frozen=True)
class StepRow:
    depth: int
    addr: str
    label: str  # the module id, or "iteration 3" / "branch 1" for a frame
    status: str
    job: str | None = None
    attempts: int = 0
    branch_chosen: int | None = None
    iteration: Any = None  # the iteration's value
    error: str | None = None


def step_rows(state: FlowState, archived: dict[str, FrameState] | None = None) -> list[StepRow]:
    """Every module and child frame reached so far, depth first, in definition order."""
    archived = archived or {}
    rows: list[StepRow] = []
    _frame_rows(state.root, 0, archived, rows)
    if state.failure_frame is not None:
        _frame_rows(state.failure_frame, 0, archived, rows)
    return rows


def _frame_rows(frame: FrameState, depth: int, archived: dict[str, FrameState], rows: list[StepRow]) -> None:
    for ms in frame.modules:
        rows.append(_module_row(ms, depth))
        children = {f.addr: f for f in ms.frames}
        prefix = f"{ms.addr}/"
        children.update({addr: f for addr, f in archived.items()
                         if addr.startswith(prefix) and "/" not in addr[len(prefix):]})
        for addr in sorted(children, key=lambda a: int(a.rsplit("/", 1)[1])):
            child = children[addr]
            index = int(addr.rsplit("/", 1)[1])
            label = f"iteration {index}" if child.iter is not None else f"branch {index}"
            rows.append(StepRow(depth + 1, addr, label, child.status,
                                iteration=None if child.iter is None else child.iter.get("value"),
                                error=_message(child.error)))
            _frame_rows(child, depth + 2, archived, rows)


def _module_row(ms: ModuleState, depth: int) -> StepRow:
    status = "suspended" if ms.suspended else ("skipped" if ms.skipped else ms.status)
    return StepRow(depth, ms.addr, ms.id, status, job=ms.job, attempts=ms.attempts,
                   branch_chosen=ms.branch_chosen, error=_message(ms.error))


def _message(error: dict[str, Any] | None) -> str | None:
    if not error:
        return None
    return f"{error.get('name', 'Error')}: {error.get('message', '')}"


def format_tree(rows: list[StepRow]) -> str:
    """The rows as indented text lines: label, status, job id, attempts, branch, iteration, error."""
    lines = []
    for row in rows:
        parts = [f"{'  ' * row.depth}{row.label}", row.status]
        if row.job:
            parts.append(row.job)
        if row.attempts > 1:
            parts.append(f"attempts={row.attempts}")
        if row.branch_chosen is not None:
            parts.append(f"branch_chosen={row.branch_chosen}")
        if row.iteration is not None:
            parts.append(f"value={row.iteration!r}")
        if row.error:
            parts.append(row.error)
        lines.append("  ".join(parts))
    return "\n".join(lines)
