"""Everything the HTTP API needs, built once per process: the domain packages' stores on one client.

The API uses the domain packages directly (DESIGN.md §3), not the CLI's Python
client; the wiring is the same as the client's, so both admit, list and cancel
alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from auth.identity import IdentityStore
from common import instance
from common.connection import connect
from common.fleet import Fleet
from common.keys import Keys
from common.settings import Settings
from common.store import Store
from jobs.admission import ADMIN_USER, Admission
from jobs.locking import Locker
from jobs.scripts import ScriptStore
from schedules.store import ScheduleStore
from storage.objects import ObjectStore, from_settings
from vault.crypto import SecretBox
from vault.store import Vault


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    keys: Keys
    store: Store
    scripts: ScriptStore
    fleet: Fleet
    identity: IdentityStore
    admission: Admission
    schedules: ScheduleStore
    vault: Vault
    locker: Locker
    objects: ObjectStore | None  # GRISTMILL_OBJECT_STORE_URL: stored log parts and results

    @classmethod
    def build(cls, settings: Settings, client: redis.Redis | None = None) -> Services:
        """The stores of the configured instance, on ``client`` (else a new connection)."""
        if client is None:
            client = connect(settings.effective_redis_url, password=settings.redis_password(),
                             socket_timeout=settings.redis_socket_timeout_s)
        keys = Keys(settings.namespace)
        store = Store(client, keys)
        scripts = ScriptStore(client, keys)
        identity = IdentityStore(client, keys)
        admission = Admission(store, scripts, settings, authority=identity)
        box = SecretBox.from_setting(settings.secret_key) if settings.secret_key else None
        return cls(
            settings=settings, redis=client, keys=keys, store=store, scripts=scripts,
            fleet=Fleet(client, keys), identity=identity, admission=admission,
            schedules=ScheduleStore(admission), vault=Vault(client, keys, box, access=identity.access),
            locker=Locker(scripts, admission), objects=from_settings(settings.object_store_url),
        )

    def cancel(self, job_id: str, *, reason: str = "", by: str = ADMIN_USER) -> str:
        """Cancel a job: ``canceled`` when it was queued, ``requested`` when it is running."""
        return self.store.cancel(job_id, by=by, reason=reason,
                                 retention_s=instance.load(self.redis, self.keys).retention_s)
