"""What a job's process sees: the WM_* contextual variables and no Redis credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from gristmill.client import Gristmill
from gristmill.embedded import EmbeddedRedis
from tests.e2e.conftest import GROUP, RunningFleet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(45)]

WM_NAMES = ("WM_JOB_ID", "WM_TOKEN", "WM_PERMISSIONED_AS", "WM_BASE_URL", "WM_WORKER_GROUP",
            "WM_ROOT_FLOW_JOB_ID")
PY_ENV_JOB = "import os\n\ndef main():\n    return dict(os.environ)\n"
BASH_ENV_JOB = "env\n"


def check_job_env(env: dict[str, str], job_id: str, redis_url: str) -> None:
    """DESIGN.md §7: every WM_* name set, nothing of Gristmill's own, no way to Redis."""
    assert all(env.get(name) for name in WM_NAMES), {n: env.get(n) for n in WM_NAMES}
    assert env["WM_JOB_ID"] == job_id
    assert env["WM_ROOT_FLOW_JOB_ID"] == job_id
    assert env["WM_PERMISSIONED_AS"] == "u/admin"
    assert env["WM_WORKER_GROUP"] == "default"
    assert env["WM_BASE_URL"].startswith("http")
    assert [k for k in env if k.startswith("GRISTMILL_")] == []
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    leaks = {k: v for k, v in env.items() if "redis://" in v or "rediss://" in v or port in v}
    assert leaks == {}


def test_job_environment(
    fleet_up: RunningFleet, gm: Gristmill, redis_client: redis.Redis,
    redis_server: EmbeddedRedis,
) -> None:
    """python3 and bash jobs get WM_* variables and no GRISTMILL_* nor Redis URL; the worker has it."""
    environ = Path(f"/proc/{fleet_up.worker.pid}/environ").read_bytes().split(b"\0")
    assert f"GRISTMILL_REDIS_URL={redis_server.url}".encode() in environ

    py_id = gm.run_preview(PY_ENV_JOB, "python3")
    bash_id = gm.run_preview(BASH_ENV_JOB, "bash")

    py_job = gm.wait(py_id, timeout_s=20)
    assert py_job.status == "success", py_job.error
    check_job_env(py_job.result, py_id, redis_server.url)

    bash_job = gm.wait(bash_id, timeout_s=20)
    assert bash_job.status == "success", bash_job.error
    lines = [fields[b"l"].decode()
             for _, fields in redis_client.xrange(f"{GROUP}:logs:{bash_id}")]
    bash_env = dict(line.split("=", 1) for line in lines if "=" in line)
    check_job_env(bash_env, bash_id, redis_server.url)
