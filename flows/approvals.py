"""Approving a suspended flow step: by a signed URL, or by a signed-in user (the UI's buttons).

A step with ``suspend`` waits for ``required_events`` approvals. Its wait's
rules travel in the ``await_resume`` action, which the flow store keeps on the
flow (``await:<step>``): who may approve is decided here from them, and an
approval becomes a ``Resumed`` event of the flow. A signed URL
(``flows/approval.py``) is accepted once (its nonce) before its expiry; it
approves as ``anonymous``, so a wait that requires a signed-in approver
(``user_auth_required``, ``user_groups_required``, ``self_approval_disabled``)
refuses it.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from auth.permissions import Principal
from common.errors import GristmillError, NotFound, PermissionDenied
from common.models import Job, Kind
from common.store import Store
from flows.approval import resume_urls, verify
from flows.handoff import send
from flows.state import AwaitResume, Resumed
from flows.steps import step_rows
from flows.store import FlowStore
from flows.tree import find

URL_LIFETIME_MS = 7 * 24 * 3600 * 1000
FLOW_KINDS = frozenset({Kind.FLOW, Kind.FLOWPREVIEW})


def secret_of(secret_key: str | None) -> bytes:
    """The instance secret the URLs are signed with (``GRISTMILL_SECRET_KEY``)."""
    if not secret_key:
        raise GristmillError("resume URLs need the instance secret: set GRISTMILL_SECRET_KEY")
    # Its text is as secret as its bytes: approval.py derives a key of its own from it.
    return secret_key.strip().encode()


class Approvals:
    """The suspended steps of flows, and their approvals."""

    def __init__(self, store: Store, secret_key: str | None) -> None:
        self.store = store
        self.flows = FlowStore(store.client, store.keys)
        self.secret_key = secret_key

    def flow_job(self, flow_id: str) -> Job:
        job = self.store.get_job(flow_id)
        if job.kind not in FLOW_KINDS:
            raise NotFound(f"job {flow_id} is not a flow")
        return job

    def waiting(self, flow: Job) -> dict[str, AwaitResume]:
        """The steps of ``flow`` that wait for approvals now, with their rules."""
        state = self.flows.state(flow.group, flow.id)
        if state is None or state.status != "running":
            return {}
        suspended = {row.addr for row in step_rows(state, self.flows.archived_frames(flow.group, flow.id))
                     if row.status == "suspended"}
        return {addr: wait for addr, wait in self.flows.awaits(flow.group, flow.id).items()
                if addr in suspended}

    def _wait(self, flow: Job, step: str) -> AwaitResume:
        wait = self.waiting(flow).get(step)
        if wait is None:
            raise NotFound(f"step {step!r} of flow {flow.id} is not waiting for an approval")
        return wait

    def urls(self, flow: Job, step: str, *, base_url: str) -> dict[str, str]:
        """A fresh pair of signed URLs (``resume``, ``cancel``) for one approver of ``step``."""
        self._wait(flow, step)
        expires = self.store.clock() + URL_LIFETIME_MS
        return resume_urls(base_url, secret_of(self.secret_key), flow.id, step,
                           secrets.token_urlsafe(12), expires)

    def urls_for_step(self, step_job: Job, *, base_url: str) -> dict[str, str]:
        """A fresh pair of signed URLs for the suspend that follows a running step job, asked by
        the step itself (``gristmill.get_resume_urls()`` in its code, e.g. to mail an approver).

        The flow and the step's address come from the step job's record and its flow's state,
        never from the caller, so a step gets the URLs of its own suspend and no other.
        """
        flow_id, group = step_job.parent_job, step_job.flow_group
        if not flow_id or not group:
            raise GristmillError(f"job {step_job.id} is not a flow step: it has no resume URLs")
        state = self.flows.state(group, flow_id)
        flow = self.flows.definition(group, flow_id)
        addr = state.jobs.get(step_job.id) if state is not None and state.status == "running" else None
        found = find(flow, state, addr) if flow and state and addr else None
        if found is None:
            raise GristmillError(f"job {step_job.id} is not a running step of flow {flow_id}")
        addr = found[2].addr
        suspend = found[1].suspend
        if suspend is None or suspend.required_events <= 0:
            raise GristmillError(f"step {addr!r} has no suspend: its flow would not wait for "
                                 f"resume URLs (give the module a suspend with required_events)")
        expires = self.store.clock() + URL_LIFETIME_MS
        return resume_urls(base_url, secret_of(self.secret_key), flow_id, addr,
                           secrets.token_urlsafe(12), expires)

    def by_url(self, flow_id: str, action: Literal["resume", "cancel"], step: str, *, nonce: str,
               expires: int, signature: str, payload: Any = None) -> None:
        """Accept one signed URL, once, before its expiry."""
        now = self.store.clock()
        if not verify(secret_of(self.secret_key), flow_id, step, nonce, action, expires, signature,
                      now_ms=now):
            raise PermissionDenied("this resume URL is not valid: its signature does not match, "
                                   "or it expired")
        flow = self.flow_job(flow_id)
        wait = self._wait(flow, step)
        if wait.user_auth_required or wait.user_groups_required or wait.self_approval_disabled:
            raise PermissionDenied(f"step {step!r} needs a signed-in approver: approve it in the "
                                   f"web UI or with POST /api/jobs/{flow_id}/approve/{step}")
        used = self.store.keys.group(flow.group).flow_nonce(flow_id, nonce)
        if not self.store.client.set(used, "1", nx=True, px=max(1, expires - now)):
            raise PermissionDenied("this resume URL was used already")
        send(self.store.client, self.store.keys, flow.group, flow_id,
             Resumed(step=step, approved=action == "resume", payload=payload))

    def by_user(self, flow: Job, step: str, principal: Principal, *, approved: bool,
                payload: Any = None) -> None:
        """An approval (or disapproval) by a signed-in user who may see the flow."""
        wait = self._wait(flow, step)
        if wait.self_approval_disabled and principal.name == flow.created_by:
            raise PermissionDenied(f"step {step!r} may not be approved by the flow's own creator")
        if wait.user_groups_required and not principal.is_admin and not any(
                f"g/{group}" in principal.identities for group in wait.user_groups_required):
            raise PermissionDenied(f"step {step!r} may be approved only by members of "
                                   + ", ".join(wait.user_groups_required))
        send(self.store.client, self.store.keys, flow.group, flow.id,
             Resumed(step=step, approved=approved, approver=principal.name, payload=payload))
