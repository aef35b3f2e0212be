"""Lock resolution with ``uv pip compile``: the command, the index options, reading the lock.

The resolver runs user-influenced input (the script's requirements), so the
worker runs it inside the job sandbox like any job code: ``command`` builds
what the sandbox executes (``deps/lockwrapper.py`` around uv), and
``parse_lock`` checks what comes back before anything on the host trusts it.
A lock is ``name==version`` lines only, for wheels only (``--only-binary
:all:``): installing it on the host then runs no code of any package and
reads no file a requirement named (direct references are refused).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass

from deps.inference import normalize
from deps.lockwrapper import LOCK_FILE, REQUIREMENTS_FILE

__all__ = ["LOCK_FILE", "REQUIREMENTS_FILE", "IndexOptions", "LockError", "command", "parse_lock"]
# Where uv keeps its cache inside the sandbox: the job's own /tmp, gone with it.
SANDBOX_CACHE = "/tmp/uv-cache"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)$")


class LockError(ValueError):
    """The resolver's output is not a lock we install; the message says which line and why."""


@dataclass(frozen=True)
class IndexOptions:
    """Where packages come from (settings ``GRISTMILL_PIP_*``)."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False

    @classmethod
    def from_settings(cls, index_url: str | None, extra: str, find_links: str,
                      no_index: bool) -> IndexOptions:
        return cls(index_url or None, tuple(extra.split()), tuple(find_links.split()), no_index)

    def args(self) -> list[str]:
        """uv's options for these sources."""
        out: list[str] = []
        if self.no_index:
            out.append("--no-index")
        elif self.index_url:
            out += ["--index-url", self.index_url]
        if not self.no_index:
            for url in self.extra_index_urls:
                out += ["--extra-index-url", url]
        for link in self.find_links:
            out += ["--find-links", link]
        return out

    def local_dirs(self) -> tuple[str, ...]:
        """The find-links that are directories on this host: the sandbox must show them."""
        paths = (link.removeprefix("file://") for link in self.find_links)
        return tuple(os.path.normpath(p) for p in paths if os.path.isabs(p) and os.path.isdir(p))

    def fingerprint(self) -> str:
        return "\0".join([self.index_url or "", *self.extra_index_urls, "|", *self.find_links,
                          str(self.no_index)])


def resolution_key(requirements_text: str, options: IndexOptions) -> str:
    """What a resolution is cached under: the requirement set, the sources, this Python."""
    material = f"{requirements_text}\0{options.fingerprint()}\0{sys.version_info[:2]}"
    return hashlib.sha256(material.encode()).hexdigest()


def compile_args(options: IndexOptions) -> list[str]:
    """``uv pip compile``'s options after the input and output files."""
    return ["--no-header", "--no-annotate", "--strip-extras", "--only-binary", ":all:",
            "--no-config", "--color", "never", "--no-progress", "--python", sys.executable,
            "--cache-dir", SANDBOX_CACHE, *options.args()]


def command(uv: str, options: IndexOptions) -> list[str]:
    """What the sandbox runs: the wrapper, which runs uv and sends the lock on the result pipe."""
    return [sys.executable, "-u", "-P", "-m", "deps.lockwrapper", uv, *compile_args(options)]


# How the worker reaches package indexes (trust roots, proxies): uv gets them too, no secret.
NETWORK_PASSTHROUGH = ("SSL_CERT_FILE", "SSL_CERT_DIR", "UV_NATIVE_TLS", "HTTP_PROXY",
                       "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def network_env() -> dict[str, str]:
    return {name: os.environ[name] for name in NETWORK_PASSTHROUGH if name in os.environ}


def sandbox_env() -> dict[str, str]:
    """uv's environment inside the sandbox: no downloaded Pythons, no user configuration."""
    return {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1", "UV_CACHE_DIR": SANDBOX_CACHE,
            "NO_COLOR": "1", **network_env()}


def parse_lock(text: str) -> str:
    """The lock as stored: ``name==version`` lines, sorted by name; LockError otherwise."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise LockError(
                f"lock line {number}: {line!r} is not 'name==version'; direct references "
                "(name @ URL), editable and local paths are not supported: publish the "
                "package to an index or a --find-links directory (GRISTMILL_PIP_FIND_LINKS)"
            )
        pins[normalize(match.group(1))] = f"{normalize(match.group(1))}=={match.group(2)}"
    return "".join(pins[name] + "\n" for name in sorted(pins))


def lock_hash(lock: str) -> str:
    """The content address of a lock (and of its environment)."""
    return hashlib.sha256(f"{lock}\0{sys.version_info[:2]}".encode()).hexdigest()[:16]
