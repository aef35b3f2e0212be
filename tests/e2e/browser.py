"""Debian's Chromium driven by Playwright, for the web UI tests.

Playwright's own browser download is never used (it cannot download here):
the tests launch ``/usr/bin/chromium``, which :func:`ensure_chromium` installs
with apt-get when it is missing (the test run is root in CI and in the dev
container). axe-core comes with the ``axe-playwright-python`` wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
APT_TIMEOUT_S = 900


def ensure_chromium() -> str:
    """The path of Chromium, installed with apt-get first if needed; raises if impossible."""
    if CHROMIUM.exists():
        return str(CHROMIUM)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"{CHROMIUM} is missing and cannot be installed here: "
                           "install Debian's `chromium` package")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends",
                                         "chromium"]):
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=APT_TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
    if not CHROMIUM.exists():
        raise RuntimeError("apt-get installed chromium but /usr/bin/chromium is still missing")
    return str(CHROMIUM)
