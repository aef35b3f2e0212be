"""The cost of a lock on the warm path: the same no-op job with and without an environment.

    python -m bench.locks [--runs N]

Talks to a running fleet (`gristmill up` in this directory, or
GRISTMILL_REDIS_URL). Deploys ``def main(): return 1`` twice: once plain (no
lock), once with ``# extra_requirements: idna`` (a lock, so an environment is
bound into every job's sandbox and put on its PYTHONPATH), waits for the lock
and the first install, then runs the two alternately, ``--runs`` times each,
and prints the median and p90 of submit-to-result time. Needs the workers to
reach a package index (or GRISTMILL_PIP_FIND_LINKS with an idna wheel).
"""

from __future__ import annotations

import argparse
import statistics
import time

from gristmill.client import Gristmill

PLAIN = "def main():\n    return 1\n"
LOCKED = "# extra_requirements:\n# idna\n" + PLAIN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    ns = parser.parse_args()
    gm = Gristmill()
    plain, _ = gm.deploy_script("u/admin/bench_plain", PLAIN, "python3")
    locked, _ = gm.deploy_script("u/admin/bench_locked", LOCKED, "python3")
    if locked.lock_job and locked.lock_job != "none":
        gm.wait(locked.lock_job, 300)
    gm.wait(gm.run_hash(locked.hash), 300)  # the first run installs the environment
    times: dict[str, list[float]] = {"no lock": [], "lock": []}
    for _ in range(ns.runs):
        for name, version in (("no lock", plain), ("lock", locked)):
            started = time.monotonic()
            job = gm.wait(gm.run_hash(version.hash), 60)
            if job.result != 1:
                raise SystemExit(f"{name}: {job.status} {job.error}")
            times[name].append((time.monotonic() - started) * 1000)
    for name, values in times.items():
        values.sort()
        print(f"{name:8} median {statistics.median(values):7.1f} ms   "
              f"p90 {values[int(len(values) * 0.9)]:7.1f} ms   (n={len(values)})")


if __name__ == "__main__":
    main()
