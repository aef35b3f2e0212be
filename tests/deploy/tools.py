"""External tools the deploy checks run, found on PATH or installed on first use.

promtool is not on PyPI. When it is missing, it is taken from Debian's
``prometheus`` package: ``apt-get download`` fetches the .deb and ``dpkg-deb -x``
unpacks it into the virtualenv. Unpacking rather than ``apt-get install`` gets
the static promtool binary without installing (and possibly starting) a
Prometheus server on the machine. Needs a Debian-based system (CI is one).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

TOOLS_DIR = Path(sys.prefix) / "gristmill-tools"
APT_TIMEOUT_S = 240


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          timeout=APT_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)


def _download_deb(package: str, into: Path) -> Path:
    done = _run(["apt-get", "download", package], cwd=into)
    if done.returncode != 0:  # a machine whose package lists were never fetched
        update = _run(["apt-get", "update"])
        if update.returncode != 0:
            pytest.fail(f"apt-get update failed (install {package} yourself):\n{update.stderr}")
        done = _run(["apt-get", "download", package], cwd=into)
    debs = sorted(into.glob(f"{package}_*.deb"))
    if done.returncode != 0 or not debs:
        pytest.fail(f"apt-get download {package} failed:\n{done.stdout}{done.stderr}")
    return debs[0]


def promtool() -> str:
    """The path of a working promtool."""
    found = shutil.which("promtool")
    if found:
        return found
    unpacked = TOOLS_DIR / "prometheus"
    binary = unpacked / "usr" / "bin" / "promtool"
    if not binary.exists():
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            pytest.fail("promtool not found and no apt-get here: install Prometheus' promtool")
        with tempfile.TemporaryDirectory() as tmp:
            deb = _download_deb("prometheus", Path(tmp))
            staging = Path(tmp) / "x"
            unpack = _run(["dpkg-deb", "-x", str(deb), str(staging)])
            if unpack.returncode != 0:
                pytest.fail(f"dpkg-deb -x {deb.name} failed:\n{unpack.stderr}")
            unpacked.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(unpacked, ignore_errors=True)
            shutil.move(str(staging), unpacked)
    version = _run([str(binary), "--version"])
    assert version.returncode == 0, version.stderr
    return str(binary)
