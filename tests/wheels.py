"""Tiny wheels written by hand (zipfile), so dependency tests never need a package index."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def write_wheel(directory: Path, name: str, version: str, module_code: str,
                requires: tuple[str, ...] = ()) -> Path:
    """``<name>-<version>-py3-none-any.whl`` holding module ``<name>`` (one ``__init__.py``)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = "".join([
        "Metadata-Version: 2.1\n", f"Name: {name}\n", f"Version: {version}\n",
        *(f"Requires-Dist: {req}\n" for req in requires),
    ])
    files = {
        f"{dist}/__init__.py": module_code.encode(),
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: gristmill-tests\n"
                         b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{info}/RECORD,,\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name_in_zip, data in files.items():
            wheel.writestr(name_in_zip, data)
        wheel.writestr(f"{info}/RECORD", record)
    return path
