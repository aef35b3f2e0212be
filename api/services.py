"""Everything the HTTP API needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from common.crypto import SecretBox
from common.identity import IdentityStore
from common.settings import Settings
from common.vault import Vault
from flows.approvals import Approvals
from gristmill.client import Gristmill


@dataclass
class Services:
    gm: Gristmill
    identity: IdentityStore
    vault: Vault
    settings: Settings
    approvals: Approvals

    @classmethod
    def build(cls, source: Settings | Gristmill) -> Services:
        gm = source if isinstance(source, Gristmill) else Gristmill(settings=source)
        settings = gm.settings
        box = SecretBox.from_setting(settings.secret_key) if settings.secret_key else None
        vault = Vault(gm.redis, gm.keys, box, access=gm.identity.access)
        return cls(gm=gm, identity=gm.identity, vault=vault, settings=settings,
                   approvals=Approvals(gm.store, settings.secret_key))
