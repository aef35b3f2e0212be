"""The CLI against a real scheduler and worker: previews, script deploy/run/show."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningFleet

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(60)]


def write(path: Path, code: str) -> Path:
    path.write_text(textwrap.dedent(code))
    return path


def test_preview_python_prints_result(fleet_up: RunningFleet, tmp_path: Path) -> None:
    """`preview file.py -a k=v --wait` prints main's result as JSON and exits 0."""
    procs = fleet_up.procs
    code = write(tmp_path / "hello.py", """
        def main(name: str, count: int = 1):
            print("hi from the job")
            return {"greeting": f"hello {name}", "count": count}
    """)
    done = procs.cli("preview", str(code), "-a", "name=Ada", "-a", "count=3", "--wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"greeting": "hello Ada", "count": 3}


def test_preview_python_failure_exits_1(fleet_up: RunningFleet, tmp_path: Path) -> None:
    """A python3 job that raises makes `preview --wait` exit 1 and print the error."""
    procs = fleet_up.procs
    code = write(tmp_path / "boom.py", """
        def main():
            raise ValueError("boom at the mill")
    """)
    done = procs.cli("preview", str(code), "--wait")
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert "failure: ValueError: boom at the mill" in done.stderr
    assert "Traceback" in done.stderr and ", in main" in done.stderr


def test_preview_bash_prints_result(fleet_up: RunningFleet, tmp_path: Path) -> None:
    """A bash preview gets its args as $1.. and its last stdout line is the result."""
    procs = fleet_up.procs
    code = write(tmp_path / "hello.sh", """
        name="$1"
        count="${2:-2}"
        echo "working"
        echo "{\\"name\\": \\"$name\\", \\"count\\": $count}"
    """)
    done = procs.cli("preview", str(code), "-a", "name=Ada", "--wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "Ada", "count": 2}


def test_preview_bash_failure_exits_1(fleet_up: RunningFleet, tmp_path: Path) -> None:
    """A bash job exiting non-zero makes `preview --wait` exit 1 with its exit code and stderr."""
    procs = fleet_up.procs
    code = write(tmp_path / "fail.sh", """
        echo "cannot reach the river" >&2
        exit 3
    """)
    done = procs.cli("preview", str(code), "--wait")
    assert done.returncode == 1
    assert "failure: ExitCode: bash exited with code 3" in done.stderr
    assert "cannot reach the river" in done.stderr


def test_script_deploy_run_and_show(fleet_up: RunningFleet, tmp_path: Path) -> None:
    """`script deploy` prints a 16-hex hash; `run --wait` runs it; `script show` by path and hash."""
    procs = fleet_up.procs
    code = write(tmp_path / "x.py", """
        def main(n: int):
            return n * 2
    """)
    deployed = procs.cli("script", "deploy", "u/alice/x", str(code))
    assert deployed.returncode == 0, deployed.stderr
    digest = deployed.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{16}", digest), deployed.stdout

    ran = procs.cli("run", "u/alice/x", "-a", "n=21", "--wait")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == 42

    for ref in ("u/alice/x", digest):
        shown = procs.cli("script", "show", ref)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"^path\s+u/alice/x$", shown.stdout, re.M), shown.stdout
        assert re.search(rf"^hash\s+{digest}$", shown.stdout, re.M), shown.stdout
        assert re.search(r"^language\s+python3$", shown.stdout, re.M), shown.stdout
        assert "return n * 2" in shown.stdout
