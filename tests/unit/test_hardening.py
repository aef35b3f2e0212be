"""Gristmill processes hide their environment from same-user job code."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_forbid_inspection_makes_the_process_non_dumpable() -> None:
    """After the call the process is non-dumpable (its /proc files belong to root)."""
    code = ("from common.hardening import forbid_inspection, is_dumpable\n"
            "print(is_dumpable(), forbid_inspection(), is_dumpable())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         check=True).stdout.split()
    assert out == ["True", "True", "False"]

