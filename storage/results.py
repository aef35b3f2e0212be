"""Results larger than ``max_result_bytes``: kept in the object store, read back by the client.

The record then has no ``result`` but ``result_ref`` (the object key) and
``result_bytes``; :func:`load_result` returns the value. Keys are
``results/<day>/<job id>.msgpack`` with the same day rule as stored logs
(storage/logs.py), so the same sweep expires them with their records.
"""

from __future__ import annotations

from typing import Any

from common import codec
from common.models import Job
from storage.logs import day_of
from storage.objects import ObjectStore, StorageError

RESULTS = "results/"


def result_key(job_id: str, keep_until_ms: int) -> str:
    return f"{RESULTS}{day_of(keep_until_ms)}/{job_id}.msgpack"


def store_result(objects: ObjectStore, job_id: str, keep_until_ms: int, packed: bytes) -> str:
    """Write a packed result; its key (StorageError when the store fails)."""
    key = result_key(job_id, keep_until_ms)
    objects.put(key, packed)
    return key


def load_result(objects: ObjectStore, key: str) -> Any:
    return codec.unpack(objects.get(key))


def with_result(objects: ObjectStore | None, job: Job) -> Job:
    """``job`` with a result kept in the object store read back into ``result``; when the store
    cannot be read (or none is configured), ``result`` stays empty and ``result_ref`` says where
    it is."""
    if job.result_ref is None or objects is None:
        return job
    try:
        return job.model_copy(update={"result": load_result(objects, job.result_ref)})
    except StorageError:
        return job
