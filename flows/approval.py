"""Resume and cancel URLs of a suspended flow step, signed with a secret (pure).

A URL names the flow, the step's address, a nonce (one per approver, so the
endpoint can refuse a URL used twice), its action and its expiry; its
signature is an HMAC-SHA256 over all of them with a key derived from the
instance secret (``GRISTMILL_SECRET_KEY``), so no one can forge an approval
or turn a cancel URL into a resume one.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal
from urllib.parse import quote

Action = Literal["resume", "cancel"]
_PURPOSE = b"gristmill flow resume urls v1"


def _key(secret: bytes) -> bytes:
    # A key of its own, so a signature here is never valid for another use of the secret.
    return hmac.new(secret, _PURPOSE, hashlib.sha256).digest()


def _message(flow_id: str, step: str, nonce: str, action: Action, expires_ms: int) -> bytes:
    return "\n".join((flow_id, step, nonce, action, str(expires_ms))).encode()


def sign(secret: bytes, flow_id: str, step: str, nonce: str, action: Action, expires_ms: int) -> str:
    """The signature of one resume or cancel URL."""
    message = _message(flow_id, step, nonce, action, expires_ms)
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def verify(secret: bytes, flow_id: str, step: str, nonce: str, action: Action, expires_ms: int,
           signature: str, *, now_ms: int) -> bool:
    """True when the signature is ours for exactly these fields and has not expired."""
    if now_ms > expires_ms:
        return False
    expected = sign(secret, flow_id, step, nonce, action, expires_ms)
    return hmac.compare_digest(expected, signature)


def resume_urls(base_url: str, secret: bytes, flow_id: str, step: str, nonce: str,
                expires_ms: int) -> dict[str, str]:
    """``{"resume": url, "cancel": url}`` for one approver of a suspended step."""
    base = base_url.rstrip("/")
    urls: dict[str, str] = {}
    actions: tuple[Action, ...] = ("resume", "cancel")
    for action in actions:
        signature = sign(secret, flow_id, step, nonce, action, expires_ms)
        urls[action] = (f"{base}/api/jobs/flows/{quote(flow_id, safe='')}/{action}/{quote(step, safe='')}"
                        f"?nonce={quote(nonce, safe='')}&expires={expires_ms}&signature={signature}")
    return urls
