"""Deploying a python3 script locks it: a ``dependencies`` job per new version.

A version whose code needs no third-party package is locked at deploy (an
empty lock: no job, no delay). Otherwise the version is saved ``locking``
with the id of a dependencies job, which is then enqueued in the group the
script's own jobs go to (its tag, else ``python3``), so the workers that
resolve a lock are the ones that install it. The job's worker stores the lock
(or the failure) on the version with ``ScriptStore.set_lock``.
"""

from __future__ import annotations

import uuid
from typing import Any

from common.errors import SpecError
from common.models import Job, Kind, ScriptVersion, Status
from deps.inference import RequirementsError, requirements
from jobs.admission import ADMIN_USER, NAME_PATTERN, Admission
from jobs.scripts import ScriptStore

LOCKED_WITHOUT_JOB = "none"  # the lock_job of a version that needed no resolution


def lock_fields(language: str, code: str) -> tuple[dict[str, str], str | None]:
    """The lock fields of a new version, and the id of the dependencies job it needs (or None).

    SpecError when its requirement comments cannot be used: the deploy is refused
    with the line to fix, rather than saving a version that could never run.
    """
    if language != "python3":
        return {}, None
    try:
        wanted = requirements(code)
    except RequirementsError as exc:
        raise SpecError(f"requirements: {exc}") from None
    if wanted.empty:
        return {"lock_status": "locked", "lock": "", "lock_job": LOCKED_WITHOUT_JOB,
                "requirements": ""}, None
    job_id = str(uuid.uuid4())
    return {"lock_status": "locking", "lock_job": job_id, "requirements": wanted.text()}, job_id


class Locker:
    """Deploys scripts with their locks, and relocks versions on demand."""

    def __init__(self, scripts: ScriptStore, admission: Admission) -> None:
        self.scripts = scripts
        self.admission = admission

    def deploy(self, path: str, language: str, code: str, *, created_by: str = ADMIN_USER,
               **options: Any) -> tuple[ScriptVersion, bool]:
        """``ScriptStore.deploy`` plus the lock: (version, is_new); a new python3 version with
        third-party imports has a dependencies job queued (``version.lock_job``)."""
        fields, job_id = lock_fields(language, code)
        version, created = self.scripts.deploy(path, language, code, created_by=created_by,
                                               lock_fields=fields, **options)
        if created and job_id is not None:
            self.enqueue(version, job_id, created_by)
        return version, created

    def relock(self, ref: str, *, created_by: str = ADMIN_USER) -> ScriptVersion:
        """Resolve a version's lock again (``gristmill script lock``); the version as now."""
        version = self.scripts.get(ref)
        if version.language != "python3":
            raise SpecError(f"{version.path} is {version.language}: only python3 scripts have locks")
        fields, job_id = lock_fields(version.language, version.code)
        requirements_text = fields.get("requirements", "")
        if job_id is None:
            self.scripts.set_lock(version.hash, LOCKED_WITHOUT_JOB, "locking", "", "")
            self.scripts.set_lock(version.hash, LOCKED_WITHOUT_JOB, "locked", "", "")
        else:
            self.scripts.set_lock(version.hash, job_id, "locking", "", requirements_text)
            self.enqueue(version, job_id, created_by)
        return self.scripts.by_hash(version.hash)

    def enqueue(self, version: ScriptVersion, job_id: str, created_by: str) -> Job:
        """The dependencies job of ``version``, queued in its scripts' group."""
        tag = version.tag or version.language
        if not NAME_PATTERN.fullmatch(tag):
            raise SpecError(f"tag: {tag!r} is not a tag")
        now = self.admission.clock()
        job = Job(
            id=job_id, kind=Kind.DEPENDENCIES, status=Status.QUEUED, tag=tag,
            group=self.admission.route(tag), language=version.language, scheduled_for=now,
            created_at=now, created_by=created_by, permissioned_as=created_by,
            script_path=version.path, script_hash=version.hash,
        )
        self.admission.store.enqueue(job, fresh_id=True)
        return job
