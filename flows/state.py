"""A flow's state, the events that advance it and the actions a transition asks for (data only).

The state mirrors the definition as a tree of *frames*: a frame is one run of a
list of modules (the flow itself, one loop iteration, one branch, the failure
module). Each module that was reached has a :class:`ModuleState`; a loop or
branch module holds the frames of its iterations or branches. Every module
state has an *address*, its module id prefixed by the addresses of the frames
around it: ``a``, ``b/3/c`` (module ``c`` in iteration 3 of loop ``b``),
``d/0/e`` (branch 0 of ``d``), ``!/failure`` (the failure module). Step jobs
are named by address and attempt, so a transition replayed after a crash
names the same jobs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ModuleStatus = Literal["waiting", "running", "suspended", "success", "failure", "canceled"]
FrameStatus = Literal["running", "success", "failure", "stopped", "canceled"]
FlowStatus = Literal["running", "success", "failure", "canceled"]
TERMINAL_MODULE = frozenset({"success", "failure", "canceled"})
FLOW_TIMEOUT = "flow_timeout"  # the timer key of a flow job's own timeout_s (flow_open.lua)


class _State(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FrameState(_State):
    """One run of a list of modules."""

    addr: str
    status: FrameStatus = "running"
    pos: int = 0
    modules: list[ModuleState] = []
    # previous_result of the first module; {"index", "value"} inside a loop iteration.
    input: Any = None
    iter: dict[str, Any] | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    # A step's sleep: no job of this frame starts before this time (epoch ms).
    not_before: int = 0


class ModuleState(_State):
    """Where one module of one frame is."""

    id: str
    addr: str
    status: ModuleStatus = "waiting"
    job: str | None = None
    attempts: int = 0
    failed_jobs: list[str] = []
    # A leaf's evaluated inputs, kept for its retries (and shown in the flow's tree).
    args: dict[str, Any] | None = None
    timeout_s: int | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    skipped: bool = False
    # A failure that continue_on_error (or a suspend's continue_on_disapprove_timeout) let through.
    continued: bool = False
    # Loops and branches. ``frames``: the iterations / branches still running (or ended and
    # not yet taken into account); once taken into account a frame's result goes to
    # ``outcomes`` (by index; none for a canceled one) and the frame to FlowState.archived.
    iterator: list[Any] | None = None
    parallelism: int = 1
    started: int = 0
    frames: list[FrameState] = []
    outcomes: dict[int, Any] = {}
    broken: bool = False  # stop_after_if ended the loop
    branch_chosen: int | None = None  # branchone: the branch index; len(branches) is the default
    # Suspend (approval): resume payloads and approvers received so far.
    suspended: bool = False
    resumes: list[Any] = []
    approvers: list[str] = []


class FlowState(_State):
    """Everything a transition needs besides the definition."""

    flow_id: str
    status: FlowStatus = "running"
    started: bool = False
    args: dict[str, Any] = {}
    root: FrameState = Field(default_factory=lambda: FrameState(addr=""))
    failure_frame: FrameState | None = None
    # Live step jobs: job id -> module address. An event for any other job is stale.
    jobs: dict[str, str] = {}
    result: Any = None
    error: dict[str, Any] | None = None
    stopped: bool = False
    skipped: bool = False
    early_returned: bool = False
    # The flow job's own timeout_s: its timer (key FLOW_TIMEOUT) fails the flow when due.
    timeout_s: int | None = None
    # Iteration and branch frames that ended and were taken into account, in that order:
    # kept out of the state by its store (one hash field each), so an event reads and
    # writes only the frames that still run, not every iteration of a long loop.
    archived: list[FrameState] = []


# --- events -------------------------------------------------------------------------------------------


class Start(_State):
    type: Literal["start"] = "start"


class JobCompleted(_State):
    type: Literal["job_completed"] = "job_completed"
    job: str
    success: bool
    result: Any = None
    error: dict[str, Any] | None = None


class Resumed(_State):
    """An approval (or disapproval) of a suspended step, by its address."""

    type: Literal["resumed"] = "resumed"
    step: str
    approved: bool = True
    approver: str = "anonymous"
    payload: Any = None


class TimerFired(_State):
    """A timer a transition asked for (``AwaitResume.timeout_at``) is due."""

    type: Literal["timer"] = "timer"
    key: str


class Cancel(_State):
    type: Literal["cancel"] = "cancel"
    by: str = ""
    reason: str = ""


Event = Annotated[Start | JobCompleted | Resumed | TimerFired | Cancel, Field(discriminator="type")]


# --- actions ------------------------------------------------------------------------------------------


class StartJob(_State):
    """Enqueue one step job (its id is derived from flow, address and attempt)."""

    type: Literal["start_job"] = "start_job"
    job: str
    step: str
    module_id: str
    attempt: int
    kind: Literal["rawscript", "script", "flow"]
    language: str | None = None
    content: str | None = None
    lock: str | None = None
    script_path: str | None = None
    script_hash: str | None = None
    flow_path: str | None = None
    tag: str | None = None
    args: dict[str, Any] = {}
    scheduled_for: int
    timeout_s: int | None = None
    priority: int | None = None


class CancelJobs(_State):
    type: Literal["cancel_jobs"] = "cancel_jobs"
    jobs: list[str]


class AwaitResume(_State):
    """A step waits for approvals; a TimerFired(key) at ``timeout_at`` ends the wait."""

    type: Literal["await_resume"] = "await_resume"
    step: str
    job: str | None
    required_events: int
    timeout_at: int
    key: str
    # For the resume endpoint to enforce: who may approve.
    user_auth_required: bool = False
    user_groups_required: list[str] = []
    self_approval_disabled: bool = False


class EarlyReturn(_State):
    type: Literal["early_return"] = "early_return"
    step: str
    result: Any = None


class FlowCompleted(_State):
    type: Literal["flow_completed"] = "flow_completed"
    status: Literal["success", "failure", "canceled"]
    result: Any = None
    error: dict[str, Any] | None = None


Action = Annotated[
    StartJob | CancelJobs | AwaitResume | EarlyReturn | FlowCompleted, Field(discriminator="type")
]

FrameState.model_rebuild()
