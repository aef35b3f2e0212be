"""How the CLI shows jobs and scripts to people."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from common.models import Job, ScriptVersion, Status
from schedules.store import Schedule

MARKS = {Status.SUCCESS: "✔", Status.FAILURE: "✘", Status.CANCELED: "⊘",
         Status.RUNNING: "▶", Status.QUEUED: "…"}


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def compact(value: Any, limit: int = 2000) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def job_json(job: Job) -> dict[str, Any]:
    """The record with DESIGN.md's field names, decoded (for --json)."""
    return job.public()


def job_details(job: Job, attempts: list[dict[str, Any]] | None = None) -> str:
    """`job get`: did it run? did it succeed? in one look."""
    lines = [
        f"{MARKS.get(job.status, '?')} {job.status.value.upper()}  job {job.id}",
        f"  kind       {_what(job)}",
        f"  group      {job.group}   tag {job.tag}   attempt {job.attempt}"
        + (f" (retries {job.retries}, restarts {job.restarts})" if job.retries or job.restarts else "")
        + (f"   worker {job.worker}" if job.worker else ""),
        f"  as         {job.permissioned_as} (created by {job.created_by})",
        f"  created    {when(job.created_at)}",
        f"  scheduled  {when(job.scheduled_for)}",
    ]
    if job.started_at is not None:
        late = job.started_at - job.scheduled_for
        lines.append(f"  started    {when(job.started_at)} ({late:+d} ms after scheduled)")
    if job.completed_at is not None:
        took = f" (ran {job.duration_ms} ms)" if job.duration_ms is not None else ""
        lines.append(f"  completed  {when(job.completed_at)}{took}")
    lines.append(f"  args       {compact(job.args)}")
    if job.status == Status.SUCCESS:
        lines.append(f"  result     {compact(job.result)}")
    if job.error:
        lines.append(f"  error      {job.error.get('name')}: {job.error.get('message')}")
        trace = str(job.error.get("traceback") or "").rstrip()
        if trace:
            lines.extend("             " + line for line in trace.splitlines())
    if job.status == Status.CANCELED or job.cancel_requested:
        lines.append(f"  canceled   by {job.canceled_by or '?'}: {job.canceled_reason or '(no reason)'}"
                     + ("" if job.status == Status.CANCELED else " (requested)"))
    if job.status == Status.QUEUED and job.error:
        lines.append("  (the error above is from the previous attempt; a retry is queued)")
    if (attempts and len(attempts) > 1) or (attempts and job.status == Status.QUEUED):
        lines.append("  attempts")
        for entry in attempts or []:
            error = entry.get("error") or {}
            took = f"{entry.get('duration_ms')} ms" if entry.get("duration_ms") is not None else ""
            lines.append(f"    #{entry.get('attempt')} {entry.get('status', '?'):<9} "
                         f"{when(entry.get('started_at'))}  {took:>9}  {entry.get('worker') or ''}"
                         + (f"  {error.get('name')}: {error.get('message')}" if error else ""))
    if job.raw_spec is not None:
        lines.append(f"  raw spec   {job.raw_spec[:2000]}")
    return "\n".join(lines)


def _what(job: Job) -> str:
    """What the job runs, for `job get`; a rejected inbox spec runs nothing."""
    if job.raw_spec is not None:
        return "rejected inbox spec (nothing ran; the raw spec is below)"
    runnable = job.script_path or (f"hash {job.script_hash}" if job.script_hash else "raw code")
    language = f" ({job.language})" if job.language else ""
    return f"{job.kind.value}{language} — {runnable}"


def job_row(job: Job) -> str:
    what = ("rejected inbox spec" if job.raw_spec is not None
            else job.script_path or job.script_hash or "preview")
    took = f"{job.duration_ms}ms" if job.duration_ms is not None else ""
    return (f"{job.id}  {MARKS.get(job.status, '?')} {job.status.value:<8} {job.kind.value:<8} "
            f"{job.group:<10} {when(job.created_at)}  {took:>8}  {what}")


def script_details(version: ScriptVersion) -> str:
    defaults = [f"{name:<9} {compact(value)}\n" for name, value in (
        ("timeout", version.timeout_s), ("retry", version.retry), ("tag", version.tag),
        ("limits", version.limits)) if value is not None]
    lock = ""
    if version.language == "python3":
        lock = f"lock      {version.lock_state}\n"
        if version.lock:
            lock += "".join(f"          {line}\n" for line in version.lock.splitlines())
    return (f"path      {version.path}\nhash      {version.hash}\nlanguage  {version.language}\n"
            f"created   {when(version.created_at)} by {version.created_by}\n{''.join(defaults)}"
            f"{lock}---\n{version.code}")


def schedule_row(schedule: Schedule) -> str:
    state = "paused" if schedule.paused else f"next {when(schedule.next_fire)}"
    flags = " no-overlap" if schedule.no_overlap else ""
    return (f"{schedule.path}  {schedule.cron!r} {schedule.tz}  -> {schedule.script_path}  "
            f"{state}  catch-up {schedule.catch_up}{flags}")


def schedule_details(schedule: Schedule, runs: list[Job]) -> str:
    lines = [schedule_row(schedule), f"  args {compact(schedule.args)}", "  recent runs"]
    for job in runs:
        note = f"  ({job.canceled_reason})" if job.canceled_reason else ""
        lines.append(f"    {when(job.scheduled_for)}  {MARKS.get(job.status, '?')} "
                     f"{job.status.value:<8} {job.id}{note}")
    if not runs:
        lines.append("    (none yet)")
    return "\n".join(lines)
