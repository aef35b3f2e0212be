"""Instance settings kept in Redis (``gm:settings``), changed with ``gristmill settings set``.

Each known key has a type and bounds; unknown keys are refused, so a typo never
silently does nothing.
"""

from __future__ import annotations

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.connection import redis_errors
from common.errors import GristmillError
from common.keys import Keys


class InstanceSettings(BaseModel):
    """The instance-wide settings and their defaults."""

    model_config = ConfigDict(extra="forbid")

    retention_s: int = Field(
        default=30 * 24 * 3600, ge=60, description="How long completed jobs and logs are kept."
    )
    default_timeout_s: int | None = Field(
        default=None, gt=0, le=30 * 24 * 3600,
        description="Timeout of jobs that set none (unset: GRISTMILL_DEFAULT_TIMEOUT_S).",
    )
    retention_max_jobs: int = Field(
        default=1_000_000, ge=1,
        description="Completed jobs kept per worker group; the oldest beyond it are deleted "
        "(with their logs) before retention_s ends.",
    )
    max_log_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024,
        description="Log bytes kept in Redis per job; later lines are dropped and counted, "
        "with a marker line where the cut happened and a summary at completion.",
    )
    max_result_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="Largest result (msgpack) a job may return; larger fails with ResultTooLarge.",
    )


def decode(raw: dict[bytes, bytes]) -> InstanceSettings:
    """Settings from HGETALL; values that no longer validate fall back to defaults."""
    values = {k.decode(): v.decode() for k, v in raw.items()}
    known = {k: v for k, v in values.items() if k in InstanceSettings.model_fields}
    try:
        return InstanceSettings.model_validate(known)
    except ValidationError:
        return InstanceSettings()


def validate_one(key: str, value: str) -> str:
    """Check one ``settings set`` pair; return the value to store."""
    if key not in InstanceSettings.model_fields:
        raise GristmillError(
            f"unknown setting {key!r}; known: {', '.join(InstanceSettings.model_fields)}"
        )
    try:
        parsed = InstanceSettings.model_validate({key: value})
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]["msg"]
        raise GristmillError(f"bad value {value!r} for {key}: {problem}") from None
    return str(getattr(parsed, key))


@redis_errors
def load(client: redis.Redis, keys: Keys) -> InstanceSettings:
    """The instance settings as stored now (``gm:settings``)."""
    return decode(client.hgetall(keys.settings))


@redis_errors
def save_one(client: redis.Redis, keys: Keys, key: str, value: str) -> str:
    """Check and store one setting; return the value stored."""
    stored = validate_one(key, value)
    client.hset(keys.settings, key, stored)
    return stored
