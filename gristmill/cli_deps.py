"""`gristmill script lock` and `gristmill deps prune`: locks and environments from the CLI."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from common.errors import JobTimeout
from common.models import Status
from common.settings import Settings
from deps.resolver import lock_hash


def _client() -> Any:
    from gristmill.client import Gristmill

    return Gristmill()


def cmd_script_lock(ns: argparse.Namespace) -> int:
    client = _client()
    version = client.locker.relock(ns.ref)
    if version.lock_status == "locked":
        print(f"{version.hash}: locked (no third-party requirement)")
        return 0
    print(f"{version.hash}: locking by dependencies job {version.lock_job}")
    if not ns.wait:
        return 0
    try:
        job = client.wait(version.lock_job, ns.wait_timeout)
    except JobTimeout as exc:
        print(f"gristmill: {exc}", file=sys.stderr)
        return 1
    if job.status != Status.SUCCESS:
        error = job.error or {}
        print(f"lock failed: {job.id}\n{error.get('name')}: {error.get('message')}",
              file=sys.stderr)
        return 1
    print(client.scripts.by_hash(version.hash).lock or "(empty lock)", end="")
    return 0


def cmd_deps_prune(ns: argparse.Namespace) -> int:
    """Remove this host's environments that no script's latest or runnable version uses."""
    from deps.environments import EnvironmentCache
    from deps.resolver import IndexOptions

    client = _client()
    keep: set[str] = set()
    for path in client.scripts.all_paths():
        versions = [client.scripts.latest(path), client.scripts.runnable(path)]
        if ns.all_versions:
            versions = [client.scripts.by_hash(h) for h in client.scripts.history(path)]
        keep.update(lock_hash(v.lock) for v in versions if v.lock)
    settings = Settings()
    root = settings.deps_dir or settings.data_dir / "deps"
    cache = EnvironmentCache(root.resolve(), "uv", IndexOptions())
    removed = cache.prune(keep, dry_run=ns.dry_run)
    verb = "would remove" if ns.dry_run else "removed"
    for name in removed:
        print(f"{verb} {cache.envs / name}")
    print(f"{len(removed)} environment(s) {verb}; {len(keep)} lock(s) in use kept")
    return 0


def add_deps_commands(sub: Any, script: Any) -> None:
    """`script lock` under ``script``, and the `deps` group under ``sub``."""
    p = script.add_parser("lock", help="resolve a python3 version's lock again (a dependencies job)")
    p.add_argument("ref", help="a path (its latest version) or a hash")
    p.add_argument("--wait", action="store_true", help="wait for the job; print the lock")
    p.add_argument("--wait-timeout", type=float, default=900.0, metavar="SECONDS")
    p.set_defaults(func=cmd_script_lock)
    deps = sub.add_parser("deps", help="Python environments of this host").add_subparsers(
        dest="action", required=True)
    p = deps.add_parser("prune", help="remove environments no current script version uses")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.add_argument("--all-versions", action="store_true",
                   help="keep the environment of every version, not only each path's latest "
                   "and runnable one")
    p.set_defaults(func=cmd_deps_prune)
