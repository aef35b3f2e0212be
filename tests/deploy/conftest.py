from __future__ import annotations

import pytest

from tests.deploy import tools


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool, installed from Debian's prometheus package when missing."""
    return tools.promtool()
