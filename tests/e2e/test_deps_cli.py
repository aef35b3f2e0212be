"""Dependencies through the CLI and real processes: deploy locks, show, run, relock, prune."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis

from gristmill.client import Gristmill
from tests.e2e.conftest import Processes, clean_env, scheduler_registered, worker_id_of
from tests.wheels import write_wheel

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SCRIPT = "import gmtesttop\n\n\ndef main():\n    return gmtesttop.answer()\n"


def test_deploy_show_run_lock_and_prune(procs: Processes, redis_client: redis.Redis,
                                        gm: Gristmill, tmp_path: Path) -> None:
    """A worker configured with a wheel directory locks a deployed script, runs it, relocks."""
    wheels = tmp_path / "wheels"
    write_wheel(wheels, "gmtestbase", "1.2.0", "VALUE = 41\n")
    write_wheel(wheels, "gmtesttop", "0.3.0",
                "import gmtestbase\n\ndef answer():\n    return gmtestbase.VALUE + 1\n",
                ("gmtestbase>=1.0",))
    wheels.chmod(0o755)
    deps = {"GRISTMILL_PIP_FIND_LINKS": str(wheels), "GRISTMILL_PIP_NO_INDEX": "true",
            "GRISTMILL_DEPS_DIR": str(tmp_path / "deps")}
    procs.scheduler()
    worker = procs.worker(**deps)
    worker_id_of(redis_client, worker.pid)
    scheduler_registered(redis_client)
    (tmp_path / "top.py").write_text(SCRIPT)

    deployed = procs.cli("script", "deploy", "u/admin/top", str(tmp_path / "top.py"))
    assert deployed.returncode == 0, deployed.stderr
    job_id = re.search(r"locking its dependencies: job (\S+)\)", deployed.stderr)
    assert job_id, deployed.stderr
    assert gm.wait(job_id.group(1), 60).status.value == "success"
    shown = procs.cli("script", "show", "u/admin/top")
    assert "lock      locked\n          gmtestbase==1.2.0\n          gmtesttop==0.3.0\n" \
        in shown.stdout

    ran = procs.cli("run", "u/admin/top", "--wait")
    assert (ran.returncode, json.loads(ran.stdout)) == (0, 42), ran.stderr

    relocked = procs.cli("script", "lock", "u/admin/top", "--wait")
    assert relocked.returncode == 0, relocked.stderr
    assert relocked.stdout.endswith("gmtestbase==1.2.0\ngmtesttop==0.3.0\n")

    (tmp_path / "deps" / "envs" / "0000000000000000").mkdir()
    pruned = procs.cli("deps", "prune", env=clean_env(procs.redis_url, **deps))
    assert pruned.returncode == 0, pruned.stderr
    assert "removed" in pruned.stdout and "0000000000000000" in pruned.stdout
    assert "1 environment(s) removed; 1 lock(s) in use kept" in pruned.stdout
