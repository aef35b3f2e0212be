"""The environment a job's process gets: the WM_* contextual variables and nothing secret.

Job code never receives Redis credentials: the environment is built from an
allow-list, not inherited.
"""

from __future__ import annotations

import functools
import os
import secrets

from common.models import Job

# Inherited from the worker when set: what a shell needs, nothing else.
PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


@functools.cache
def _passed_through() -> tuple[tuple[str, str], ...]:
    """The PASSTHROUGH variables as this process has them, read once (a worker's environment
    does not change; reading os.environ was ~5 % of a dedicated worker's CPU a job)."""
    env = {name: os.environ[name] for name in PASSTHROUGH if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return tuple(env.items())


def job_environment(job: Job, *, base_url: str, token: str) -> dict[str, str]:
    """The environment of ``job``'s process (DESIGN.md §7); the sandbox adds HOME and TMPDIR."""
    env = dict(_passed_through())
    env.update(
        PYTHONUNBUFFERED="1",
        WM_JOB_ID=job.id,
        WM_TOKEN=token,
        WM_PERMISSIONED_AS=job.permissioned_as,
        WM_BASE_URL=base_url,
        WM_WORKER_GROUP=job.group,
        WM_ROOT_FLOW_JOB_ID=job.root_job or job.id,
        WM_JOB_PATH=job.script_path or "",
    )
    if job.flow_step_id:
        env["WM_FLOW_STEP_ID"] = job.flow_step_id
        env["WM_FLOW_JOB_ID"] = job.parent_job or ""
    return env


def process_environment(group: str) -> dict[str, str]:
    """The environment of a sandboxed process that is no one job (an init script, a dedicated
    process): the same allow-list, no token, nothing secret."""
    env = {name: os.environ[name] for name in PASSTHROUGH if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(PYTHONUNBUFFERED="1", WM_WORKER_GROUP=group)
    return env


def ephemeral_token() -> str:
    """A random per-job token (bound to permissions once identity exists)."""
    return secrets.token_urlsafe(32)
