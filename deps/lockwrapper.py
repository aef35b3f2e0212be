"""Runs inside a dependencies job's sandbox: ``uv pip compile``, then the lock on the result pipe.

``python -m deps.lockwrapper UV [uv options...] RESULT_FD``: uv's own output
(what it resolved, or why it could not) goes to the job's stdout and stderr,
which are the job's logs; the lock file it wrote is copied to RESULT_FD.
Standard library only.
"""

from __future__ import annotations

import os
import subprocess
import sys

REQUIREMENTS_FILE = "requirements.in"
LOCK_FILE = "requirements.txt"


def main(argv: list[str]) -> int:
    uv, options, result_fd = argv[1], argv[2:-1], int(argv[-1])
    print(f"resolving {REQUIREMENTS_FILE}:", flush=True)
    with open(REQUIREMENTS_FILE) as wanted:
        for line in wanted:
            print(f"  {line.rstrip()}", flush=True)
    code = subprocess.call([uv, "pip", "compile", REQUIREMENTS_FILE, "-o", LOCK_FILE, *options])
    if code == 0:
        with open(LOCK_FILE, "rb") as lock, os.fdopen(result_fd, "wb") as out:
            out.write(lock.read())
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
