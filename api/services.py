"""Everything the HTTP API needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from auth.identity import IdentityStore
from common.settings import Settings
from gristmill.client import Gristmill
from vault.crypto import SecretBox
from vault.store import Vault


@dataclass
class Services:
    gm: Gristmill
    identity: IdentityStore
    vault: Vault
    settings: Settings

    @classmethod
    def build(cls, source: Settings | Gristmill) -> Services:
        gm = source if isinstance(source, Gristmill) else Gristmill(settings=source)
        settings = gm.settings
        box = SecretBox.from_setting(settings.secret_key) if settings.secret_key else None
        vault = Vault(gm.redis, gm.keys, box, access=gm.identity.access)
        return cls(gm=gm, identity=gm.identity, vault=vault, settings=settings)
