"""msgpack encoding of the structured fields of a job record (args, result, error, retry)."""

from __future__ import annotations

from typing import Any

import msgpack

PACKED_FIELDS = frozenset({"args", "result", "error", "retry"})


def pack(value: Any) -> bytes:
    """Encode a JSON-compatible value."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    """Decode a value written by :func:`pack`."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
