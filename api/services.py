"""Everything the HTTP API needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from common.crypto import SecretBox
from common.identity import IdentityStore
from common.settings import Settings
from common.vault import Vault
from gristmill.client import Gristmill


@dataclass
class Services:
    gm: Gristmill
    identity: IdentityStore
    vault: Vault
    settings: Settings

    @classmethod
    def build(cls, settings: Settings) -> Services:
        gm = Gristmill(settings=settings)
        identity = IdentityStore(gm.redis, gm.keys)
        gm.admission.authority = identity
        box = SecretBox.from_setting(settings.secret_key) if settings.secret_key else None
        vault = Vault(gm.redis, gm.keys, box, access=identity.access)
        return cls(gm=gm, identity=identity, vault=vault, settings=settings)
