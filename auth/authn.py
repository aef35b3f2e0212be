"""The one rule every entry point applies to a token after the identity store accepted it."""

from __future__ import annotations

from typing import Protocol

from common.errors import AuthError, NotFound
from common.store import Store


class TokenFacts(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def job_id(self) -> str | None: ...


def require_live(token: TokenFacts, store: Store) -> None:
    """A job token (WM_TOKEN) works only while its job has not completed.

    The worker revokes it at the end of every attempt; this also covers the
    cases where it could not (a worker that died: the job failed WorkerLost).
    """
    if token.kind != "job" or not token.job_id:
        return
    try:
        job = store.get_job(token.job_id)
    except NotFound:
        raise AuthError("this job token's job no longer exists") from None
    if job.is_terminal:
        raise AuthError("this job token expired: its job has completed")
