"""The one error hierarchy of Gristmill.

Every error a user can see derives from :class:`GristmillError`; redis-py
errors are converted where Redis is called (:mod:`common.store`).
"""

from __future__ import annotations


class GristmillError(Exception):
    """Base of every Gristmill error; its message says what to do."""


class ConfigError(GristmillError):
    """A setting or the environment is wrong (bad Redis version, missing binary)."""


class RedisUnavailable(GristmillError):
    """Redis could not be reached or answered with an error."""


class WorkerFenced(RedisUnavailable):
    """The scheduler presumed this worker dead (silent past its lease): its claims start
    nothing until it registers again. Waited out like an outage."""


class SpecError(GristmillError):
    """A job spec was rejected; the message says exactly what is wrong."""


class NotFound(GristmillError):
    """A job, script or setting does not exist."""


class DuplicateJob(GristmillError):
    """A job with this id already exists, so it is not run again."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} already exists; it was not enqueued again")
        self.job_id = job_id


class BadRecord(GristmillError, ValueError):
    """A stored job record this version cannot read (written by another version, or damaged).

    Also a ValueError, as it was before it joined this hierarchy. ``job_id`` names the record
    (``?`` when even its id cannot be read); ``problem`` says which field is wrong."""

    def __init__(self, job_id: str, problem: str) -> None:
        super().__init__(f"job record {job_id} cannot be read (written by another version, "
                         f"or damaged): {problem}")
        self.job_id = job_id
        self.problem = problem


class Fenced(GristmillError):
    """A worker's write was refused: the job's current attempt belongs to someone else."""


class JobTimeout(GristmillError):
    """Waiting for a job took longer than the caller allowed."""


class AuthError(GristmillError):
    """No credentials, or credentials that are unknown, expired or revoked (HTTP 401)."""


class PermissionDenied(GristmillError):
    """The principal may not do this (HTTP 403); the message names what was refused."""
