"""One bucket (and prefix) of an object store, through obstore.

``GRISTMILL_OBJECT_STORE_URL`` names it: ``s3://bucket/prefix`` (also
``az://``, ``gs://``, ``file:///`` and ``memory:///``, the same code). The
endpoint and credentials come from the usual environment variables of each
service (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``AWS_ALLOW_HTTP`` for a plain-HTTP endpoint; ``AZURE_STORAGE_*``),
as obstore reads them. Every error of the store becomes :class:`StorageError`
(:class:`StorageMissing` for an absent key), so callers decide what an outage
means for them: never a lost job.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import obstore
from obstore.store import from_url

from common.errors import GristmillError

P = ParamSpec("P")
R = TypeVar("R")
# A store that does not answer is an outage to report, not a job to hold for minutes.
CLIENT_OPTIONS = {"connect_timeout": "5s", "timeout": "60s"}
RETRY = {"max_retries": 2, "retry_timeout": timedelta(seconds=15)}


def client_options() -> dict[str, Any]:
    """Our timeouts; given client options replace those obstore reads from the environment,
    so a plain-HTTP endpoint's permission (``AWS_ALLOW_HTTP``, ``ALLOW_HTTP``) is kept here."""
    options: dict[str, Any] = dict(CLIENT_OPTIONS)
    if any(os.environ.get(name, "").lower() in ("1", "true") for name in
           ("AWS_ALLOW_HTTP", "ALLOW_HTTP", "AZURE_ALLOW_HTTP")):
        options["allow_http"] = True
    return options


class StorageError(GristmillError):
    """The object store failed (unreachable, refused, misconfigured)."""


class StorageMissing(StorageError):
    """No object under that key."""


def _converted(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except FileNotFoundError as exc:
            raise StorageMissing(str(exc).splitlines()[0] if str(exc) else "not found") from exc
        except StorageError:
            raise
        except Exception as exc:  # obstore's errors, OSError, a Rust panic turned into one
            first = str(exc).strip().splitlines()
            raise StorageError(f"object store: {first[0] if first else type(exc).__name__}") \
                from exc
    return wrapper


class ObjectStore:
    """Keys are paths under the URL's prefix (``logs/…``, ``envs/…``)."""

    @_converted
    def __init__(self, url: str, **config: Any) -> None:
        self.url = url
        factory: Any = from_url  # its overloads are per scheme; the options are checked at run
        remote = not url.startswith(("file:", "memory:"))
        options = {"client_options": client_options(), "retry_config": RETRY} if remote else {}
        self._store = factory(url, **options, **config)

    @_converted
    def put(self, key: str, data: bytes | Path) -> None:
        """Write ``data`` (bytes, or a file streamed in parts) under ``key``, whole or not at all."""
        obstore.put(self._store, key, data)

    @_converted
    def get(self, key: str) -> bytes:
        return bytes(obstore.get(self._store, key).bytes())

    @_converted
    def download(self, key: str, target: Path) -> None:
        """Stream ``key`` into the file ``target``."""
        with open(target, "wb") as out:
            for chunk in obstore.get(self._store, key).stream():
                out.write(bytes(chunk))

    @_converted
    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""
        return sorted(str(meta["path"]) for batch in obstore.list(self._store, prefix=prefix)
                      for meta in batch)

    @_converted
    def prefixes(self, prefix: str) -> list[str]:
        """The "directories" right under ``prefix`` (``logs/2026-12-01``, ...)."""
        answer = obstore.list_with_delimiter(self._store, prefix=prefix)
        return sorted(str(p) for p in answer["common_prefixes"])

    @_converted
    def delete(self, keys: list[str]) -> None:
        if keys:
            obstore.delete(self._store, keys)


def from_settings(url: str | None) -> ObjectStore | None:
    """The configured store, or None when ``GRISTMILL_OBJECT_STORE_URL`` is unset."""
    return ObjectStore(url) if url else None
