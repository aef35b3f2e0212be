"""The Lua scripts of ``common/lua/``: loaded once, called by SHA.

A script is run with EVALSHA; when the server answers NOSCRIPT (restarted,
flushed, failed over) the script is loaded again and the call retried once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

ScriptArg = str | bytes | int | float


@dataclass(frozen=True)
class LuaScript:
    """One ``.lua`` file and its SHA1."""

    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(
        self, client: redis.Redis, keys: list[str], args: list[ScriptArg]
    ) -> Any:
        """Run on ``client``, loading the script first if the server lacks it."""
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: redis.client.Pipeline, keys: list[str], args: list[ScriptArg]) -> None:
        """Add an EVALSHA to a pipeline (see :func:`run_pipeline` for NOSCRIPT)."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)


def _load(name: str) -> LuaScript:
    source = resources.files("common").joinpath("lua", f"{name}.lua").read_text()
    return LuaScript(name, source)


ENQUEUE = _load("enqueue")
PROMOTE = _load("promote")
START = _load("start")
CLAIM_START = _load("claim_start")
APPEND_LOGS = _load("append_logs")
COMPLETE = _load("complete")
RECOVER = _load("recover")
REJECT = _load("reject")
DEPLOY_SCRIPT = _load("deploy_script")
SET_LOCK = _load("set_lock")
RETRY = _load("retry")
RELEASE = _load("release")
CANCEL = _load("cancel")
CANCEL_MANY = _load("cancel_many")

ALL = (ENQUEUE, PROMOTE, START, CLAIM_START, APPEND_LOGS, COMPLETE, RECOVER, REJECT, DEPLOY_SCRIPT,
       RETRY, RELEASE, CANCEL, CANCEL_MANY, SET_LOCK)


def load_all(client: redis.Redis) -> None:
    """Load every script, so pipelines can call them by SHA."""
    for script in ALL:
        client.script_load(script.source)


def run_pipeline(client: redis.Redis, pipe: redis.client.Pipeline) -> list[Any]:
    """Execute a pipeline of idempotent commands; on NOSCRIPT load all scripts and re-run it."""
    commands = list(pipe.command_stack)
    try:
        answers: list[Any] = pipe.execute()
        return answers
    except redis.exceptions.NoScriptError:
        load_all(client)
        pipe.command_stack = commands
        retried: list[Any] = pipe.execute()
        return retried
