"""The HTTP API in process: a TestClient on a real Redis, with users, groups and a worker.

``api`` builds the app exactly as `gristmill api` does (``Services.build`` then
``create_app``) on the session's Redis server (a free port, flushed per test),
with an admin and three users:

* ``admin`` — the bootstrap admin (``IdentityStore.ensure_admin``);
* ``alice`` — member of group ``ops``;
* ``bob`` — member of group ``dev``;
* ``carol`` — in no group.

``worker`` runs a real :class:`worker.worker.Worker` in a thread, so jobs
complete; tests that check that nothing ran simply do not ask for it. Job
tokens (``WM_TOKEN``) are minted the way the worker mints them
(``IdentityStore.mint_job_token``), so their rules are tested over HTTP
without spawning a job; the end-to-end path lives in
``tests/e2e/test_identity_e2e.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.services import Services
from common.models import Job
from common.settings import Settings
from gristmill.embedded import EmbeddedRedis
from vault.crypto import SecretBox, generate_key
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

USERS = ("alice", "bob", "carol")
GROUPS = {"ops": ("alice",), "dev": ("bob",)}
HOUR_MS = 3_600_000
ECHO = "def main(x: int = 1):\n    print(f'x is {x}')\n    return {'x': x}\n"


@dataclass
class Api:
    """The client, the services behind it, and everybody's API token."""

    client: TestClient
    services: Services
    key: str
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        """Headers of a request made with ``who``'s API token (or a raw token)."""
        return {"Authorization": f"Bearer {self.tokens.get(who, who)}"}

    def get(self, url: str, who: str = "admin", **kw: Any) -> Any:
        return self.client.get(url, headers={**self.auth(who), **kw.pop("headers", {})}, **kw)

    def post(self, url: str, who: str = "admin", **kw: Any) -> Any:
        return self.client.post(url, headers={**self.auth(who), **kw.pop("headers", {})}, **kw)

    def delete(self, url: str, who: str = "admin", **kw: Any) -> Any:
        return self.client.delete(url, headers={**self.auth(who), **kw.pop("headers", {})}, **kw)

    def put(self, url: str, who: str = "admin", **kw: Any) -> Any:
        return self.client.put(url, headers={**self.auth(who), **kw.pop("headers", {})}, **kw)

    def script(self, path: str, code: str = ECHO, language: str = "python3",
               who: str = "admin") -> str:
        """Deploy a version over HTTP; its hash."""
        answer = self.post("/api/scripts", who, json={"path": path, "code": code,
                                                      "language": language})
        assert answer.status_code == 201, answer.text
        digest: str = answer.json()["hash"]
        return digest

    def variable(self, path: str, value: str, *, secret: bool = False, who: str = "admin") -> None:
        """Create a variable (a secret with ``secret``) over HTTP."""
        answer = self.post("/api/variables", who, json={"path": path, "value": value,
                                                        "is_secret": secret})
        assert answer.status_code == 201, answer.text

    def run(self, path: str, args: dict[str, Any] | None = None, who: str = "admin",
            **query: Any) -> str:
        """Start the script at ``path`` over HTTP; the job id."""
        answer = self.post(f"/api/jobs/run/p/{path}", who, json=args or {}, params=query)
        assert answer.status_code == 200, answer.text
        return str(answer.text)

    def job(self, job_id: str) -> Job:
        """The stored record (read past the API)."""
        return self.services.store.get_job(job_id)

    def job_count(self) -> int:
        """How many job records exist (``gm:jobloc:*``), to show that nothing was enqueued."""
        return sum(1 for _ in self.services.redis.scan_iter(
            match=self.services.keys.jobloc("*"), count=1000))

    def job_token(self, job_id: str, permissioned_as: str, ttl_ms: int = HOUR_MS) -> str:
        """A WM_TOKEN for ``job_id``, minted as the worker mints it."""
        identity = self.services.identity
        return identity.mint_job_token(job_id, permissioned_as,
                                       expires_at=identity.clock() + ttl_ms)

    def running_job(self, permissioned_as: str, who: str = "admin") -> tuple[str, str]:
        """A queued job run as ``permissioned_as`` and its WM_TOKEN: (job id, token)."""
        answer = self.post("/api/jobs/run/preview", who,
                           json={"code": "def main():\n    return 1\n", "language": "python3"},
                           params={"permissioned_as": permissioned_as})
        assert answer.status_code == 200, answer.text
        return answer.text, self.job_token(answer.text, permissioned_as)

    def finish(self, job_id: str) -> None:
        """Complete a queued job (no worker): cancel it, which makes it terminal."""
        self.services.cancel(job_id, reason="test over")


@pytest.fixture
def api(redis_server: EmbeddedRedis, redis_client: redis.Redis, tmp_path: Path) -> Iterator[Api]:
    """The app on a flushed database, with admin, alice (ops), bob (dev) and carol."""
    key = generate_key()
    settings = Settings(redis_url=redis_server.url, secret_key=key, data_dir=tmp_path / "data")
    services = Services.build(settings)
    identity = services.identity
    admin = identity.ensure_admin()
    assert admin is not None
    tokens = {"admin": admin}
    for name in USERS:
        identity.create_user(name)
        tokens[name] = identity.create_token(name, label="tests")[0]
    for group, members in GROUPS.items():
        identity.create_group(group)
        for member in members:
            identity.add_member(group, member)
    with TestClient(create_app(services)) as client:
        yield Api(client=client, services=services, key=key, tokens=tokens)
    services.redis.close()


@pytest.fixture
def worker(api: Api, sharing_sandbox: Sandbox) -> Iterator[Worker]:
    """A worker of group default in a thread (concurrency 4), with job tokens and the key."""
    svc = api.services
    running = Worker(
        store=svc.store, scripts=svc.scripts, fleet=svc.fleet, settings=api.services.settings,
        concurrency=4, claim_block_s=0.5, tokens=api.services.identity, sandbox=sharing_sandbox,
        box=SecretBox.from_setting(api.key),
    )
    thread = threading.Thread(target=running.run, daemon=True, name="api-test-worker")
    thread.start()
    yield running
    running.stop()
    running.kill_running()
    thread.join(15)
