"""Parsing the CLI's time options (``--in 30s``, ``--at 2026-01-01T10:00:00Z``) and args."""

from __future__ import annotations

import json
import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``500ms``, ``30s``, ``5m``, ``2h``, ``1d``; a bare number is seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (examples: 500ms, 30s, 5m, 2h, 1d)")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2) or "s"])


def parse_arg_pairs(pairs: list[str]) -> dict[str, Any]:
    """``-a k=v`` pairs: each value is JSON when it parses as JSON, else the plain string."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"-a expects key=value, got {pair!r}")
        try:
            args[key] = json.loads(value)
        except ValueError:
            args[key] = value
    return args
