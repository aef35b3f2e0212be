"""Secrets at rest: AES-256-GCM with the instance key (setting ``GRISTMILL_SECRET_KEY``).

A sealed value is text, ``v1:<urlsafe base64 of nonce + ciphertext + tag>``,
so it can sit in a Redis hash field like any other. The ``context`` (a
variable's path) is bound in as associated data: a ciphertext copied to
another path does not open there.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.errors import ConfigError, GristmillError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
VERSION = "v1"
KEY_HINT = (
    "generate one with: python -c \"import secrets,base64;"
    "print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())\""
)


class DecryptionError(GristmillError):
    """A sealed value did not open: wrong key, wrong path, or altered in storage."""


def generate_key() -> str:
    """A fresh random key, as urlsafe base64 text (what ``GRISTMILL_SECRET_KEY`` holds)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def _decode_key(text: str) -> bytes:
    """The key bytes from urlsafe or standard base64, padding optional."""
    compact = "".join(text.split()).translate(str.maketrans("-_", "+/"))
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"GRISTMILL_SECRET_KEY is not base64; {KEY_HINT}") from exc


class SecretBox:
    """Seals and opens secret values with one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ConfigError(
                f"GRISTMILL_SECRET_KEY must be {KEY_BYTES} bytes, got {len(key)}; {KEY_HINT}"
            )
        self._aead = AESGCM(key)

    @classmethod
    def from_setting(cls, text: str) -> SecretBox:
        """A box from the setting's text: base64 (urlsafe or standard) of exactly 32 bytes."""
        if not text.strip():
            raise ConfigError(f"GRISTMILL_SECRET_KEY is empty; {KEY_HINT}")
        return cls(_decode_key(text))

    def __repr__(self) -> str:
        # Never let the key reach a log line or a traceback through repr().
        return "SecretBox(<key hidden>)"

    def seal(self, plaintext: str, *, context: str) -> str:
        """Encrypt ``plaintext`` under a fresh random nonce, bound to ``context``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{VERSION}:" + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, *, context: str) -> str:
        """The plaintext of ``sealed``; DecryptionError if the key, context or bytes are wrong."""
        version, sep, body = sealed.partition(":")
        if not sep or version != VERSION:
            raise DecryptionError(f"the sealed value for {context} is not in the {VERSION} format")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
        except (binascii.Error, ValueError) as exc:
            raise DecryptionError(f"the sealed value for {context} is not valid base64") from exc
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError(f"the sealed value for {context} is truncated")
        try:
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except InvalidTag as exc:
            raise DecryptionError(
                f"the secret at {context} does not decrypt: GRISTMILL_SECRET_KEY differs from the "
                "key it was written with, or the stored value was altered or copied from another path"
            ) from exc
        return plain.decode()


def load_or_create_key(path: Path) -> str:
    """The key in ``path``, creating the file (mode 0600) with a fresh key when absent.

    Used by ``gristmill up`` when ``GRISTMILL_SECRET_KEY`` is unset; two
    concurrent starts end up with the same key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        key = generate_key()
        # Written whole under a temporary name, then linked into place: a
        # reader never sees a half-written file, and link() fails if another
        # start got there first, in which case its key wins.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(key + "\n")
            os.link(tmp, path)
            return key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    text = path.read_text().strip()
    try:
        SecretBox.from_setting(text)
    except ConfigError as exc:
        raise ConfigError(f"the key file {path} does not hold a valid key ({exc})") from exc
    return text
