"""The one rule every entry point applies to a token after the identity store accepted it."""

from __future__ import annotations

from typing import Protocol

from common import log
from common.errors import AuthError, BadRecord, NotFound
from common.models import Status
from common.store import Store


class TokenFacts(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def job_id(self) -> str | None: ...


def require_live(token: TokenFacts, store: Store) -> None:
    """A job token (WM_TOKEN) works only while its job has not completed.

    A stored token is revoked at the end of its attempt; this also covers the
    cases where that could not happen (a worker that died: the job failed
    WorkerLost). A signed token (the worker's) is live only while its job runs
    under the attempt's claim it names. A job record this version cannot read is refused
    too (401, and a warning naming the job): a token that cannot be checked is not let through.
    """
    if token.kind != "job" or not token.job_id:
        return
    try:
        job = store.get_job(token.job_id)
    except NotFound:
        raise AuthError("this job token's job no longer exists") from None
    except BadRecord as exc:
        log.get(job_id=token.job_id).warning("job token refused: its job record cannot be read",
                                             problem=exc.problem)
        raise AuthError(f"this job token's job record {token.job_id} cannot be read: "
                        f"{exc.problem}") from None
    if job.is_terminal:
        raise AuthError("this job token expired: its job has completed")
    claim = getattr(token, "claim", None)  # a signed token lives as long as its attempt
    if claim is not None and (job.status != Status.RUNNING or job.claim != claim):
        raise AuthError("this job token expired: its attempt has ended")
