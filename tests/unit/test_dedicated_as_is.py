"""Which jobs of a dedicated worker go straight to their script's process (nothing prepared)."""

from __future__ import annotations

from typing import Any

import pytest

from common.models import Job, Kind, ScriptVersion, Status
from worker.runner import dedicated_as_is

pytestmark = pytest.mark.timeout(10)


def job(kind: Kind = Kind.SCRIPT) -> Job:
    return Job(id="j", kind=kind, status=Status.RUNNING, tag="default", group="default",
               language="python3", scheduled_for=0, created_at=0, script_hash="h",
               script_path="u/a/fast")


def version(**fields: Any) -> ScriptVersion:
    return ScriptVersion(hash="h", path="u/a/fast", language="python3", code="", created_at=0,
                         **fields)


@pytest.mark.parametrize(("case", "kind", "v", "language", "handled", "deps", "as_is"), [
    ("no dependencies at all", Kind.SCRIPT, version(), "python3", True, True, True),
    ("locked, nothing pinned", Kind.SCRIPT, version(lock_status="locked", lock=""), "python3",
     True, True, True),
    ("worker without deps", Kind.SCRIPT, version(lock="x==1"), "python3", True, False, True),
    ("not a dedicated script", Kind.SCRIPT, version(), "python3", False, True, False),
    ("bash", Kind.SCRIPT, version(), "bash", True, True, False),
    ("pinned packages", Kind.SCRIPT, version(lock_status="locked", lock="x==1"), "python3",
     True, True, False),
    ("still locking", Kind.SCRIPT, version(lock_status="locking"), "python3", True, True, False),
    ("lock failed", Kind.SCRIPT, version(lock_status="failed"), "python3", True, True, False),
    ("a preview resolves its own", Kind.PREVIEW, None, "python3", True, True, False),
    ("inline code, no version", Kind.SCRIPT, None, "python3", True, True, True),
])
def test_which_jobs_go_straight_to_the_process(
    case: str, kind: Kind, v: ScriptVersion | None, language: str, handled: bool, deps: bool,
    as_is: bool,
) -> None:
    assert dedicated_as_is(job(kind), v, language, handled=handled, deps=deps) is as_is, case
