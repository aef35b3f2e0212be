"""Builders shared by the integration tests."""

from __future__ import annotations

import uuid
from typing import Any

from common.models import Job, Kind, Status


def make_job(group: str = "default", *, scheduled_for: int = 0, created_at: int = 0,
             **fields: Any) -> Job:
    """A queued preview job with sensible defaults."""
    data: dict[str, Any] = {
        "id": str(uuid.uuid4()), "kind": Kind.PREVIEW, "status": Status.QUEUED, "tag": "python3",
        "group": group, "language": "python3", "code": "def main():\n    return 1\n",
        "scheduled_for": scheduled_for, "created_at": created_at,
    }
    data.update(fields)
    return Job(**data)
