"""The Lua scripts of ``common/lua/``: loaded once, called by SHA.

A script is run with EVALSHA; when the server answers NOSCRIPT (restarted,
flushed, failed over) the script is loaded again and the call retried once.

A part two scripts share lives in a snippet of its own (``common/lua/_<name>.lua``,
local functions only, no script by itself); a script's line
``-- include: _<name>.lua`` is replaced by the snippet's text when the file is
read, so Redis sees one plain script (and its SHA is of that text): no FUNCTION
library, nothing else to load on a cluster's primaries.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import hiredis
import redis

ScriptArg = str | bytes | int | float


@dataclass(frozen=True)
class LuaScript:
    """One ``.lua`` file and its SHA1."""

    name: str
    source: str

    @functools.cached_property
    def sha(self) -> str:  # computed once: every call names the script by it
        return hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(
        self, client: redis.Redis, keys: list[str], args: list[ScriptArg]
    ) -> Any:
        """Run on ``client``, loading the script first if the server lacks it.

        A raw EVALSHA, as :meth:`queue` sends one: redis-py's ``evalsha`` method adds a
        deprecation wrapper and an argument filter to every call (a few microseconds each,
        on the worker's path twice a job); a cluster routes the raw command by its keys."""
        try:
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(self.source)
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

    def queue(self, pipe: redis.client.Pipeline, keys: list[str], args: list[ScriptArg]) -> None:
        """Add an EVALSHA to a pipeline (see :func:`run_pipeline` for NOSCRIPT).

        Sent as a raw command: a cluster pipeline refuses its ``evalsha`` method
        (redis-py), yet routes a raw EVALSHA by its keys like any other command.
        """
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


INCLUDE = re.compile(r"^-- include: (_[a-z_]+\.lua)$", re.MULTILINE)


def _read(file_name: str) -> str:
    return resources.files("common").joinpath("lua", file_name).read_text()


def assemble(source: str, read: Callable[[str], str] = _read) -> str:
    """``source`` with each ``-- include: _<name>.lua`` line replaced by that snippet's text
    (snippets include nothing themselves)."""
    def snippet(match: re.Match[str]) -> str:
        text = read(match.group(1))
        if INCLUDE.search(text):
            raise ValueError(f"{match.group(1)}: a snippet includes no other snippet")
        return text.rstrip("\n")

    return INCLUDE.sub(snippet, source)


# One script call: (script, keys, args).
Call = tuple[LuaScript, Sequence[ScriptArg], Sequence[ScriptArg]]


class DirectCalls:
    """EVALSHA on connections of its own: the packed command written, the reply read.

    For a process's hottest calls (a worker's claim and completion, twice a job):
    redis-py's ``execute_command`` takes a pooled connection and gives it back, with
    its retry wrapper, argument filter and connection metrics, ~40 µs of CPU a call
    on the benchmark machine against ~18 µs here. Same semantics otherwise: the
    connections are made by the client's pool's class with its settings (address,
    credentials, TLS, socket timeout), a failed call is not retried (as the client
    is configured, ``common/connection.py``) and its connection is dropped, and
    NOSCRIPT loads the script and repeats the call once. One connection per caller
    at a time: an idle one is reused, so there are as many as concurrent callers.
    A single server only (a cluster client routes by key: use the script itself).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        pool = client.connection_pool
        self._make = functools.partial(pool.connection_class, **pool.connection_kwargs)
        self._idle: list[Any] = []  # list.pop/append are atomic under the GIL

    def __call__(self, script: LuaScript, keys: Sequence[ScriptArg],
                 args: Sequence[ScriptArg]) -> Any:
        """``script(client, keys, args)``, on a connection of this object's."""
        return self.calls([(script, keys, args)])[0]

    def many(self, script: LuaScript,
             calls: Sequence[tuple[Sequence[ScriptArg], Sequence[ScriptArg]]]) -> list[Any]:
        """Each call of ``script``, pipelined in one write: see :meth:`calls`."""
        return self.calls([(script, keys, args) for keys, args in calls])

    def calls(self, calls: Sequence[Call]) -> list[Any]:
        """Each (script, keys, args), pipelined in one write; the replies in order, an error
        reply raised once every reply is read. A call answered NOSCRIPT (a restarted or
        flushed server) did not run: its script is loaded and that call alone sent again,
        so no call runs twice."""
        # (hiredis's stub types the command as a 1-tuple: Any, not an ignore)
        commands: list[Any] = [("EVALSHA", script.sha, len(keys), *keys, *args)
                               for script, keys, args in calls]
        replies = self._round_trip([hiredis.pack_command(command) for command in commands])
        missing = [i for i, reply in enumerate(replies)
                   if isinstance(reply, redis.exceptions.NoScriptError)]
        if missing:
            for script in {calls[i][0] for i in missing}:
                self._client.script_load(script.source)
            again = self._round_trip([hiredis.pack_command(commands[i]) for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, redis.exceptions.ResponseError):
                raise reply
        return replies

    def _round_trip(self, packed: list[bytes]) -> list[Any]:
        """The replies to ``packed``, an error reply in its place as the exception."""
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._make()
        try:
            replies = exchange(conn, packed)
        except BaseException:
            conn.disconnect()  # a reply may be on its way: this connection is not reused
            raise
        self._idle.append(conn)
        return replies

    def close(self) -> None:
        while self._idle:
            self._idle.pop().disconnect()


def exchange(conn: Any, packed: list[bytes]) -> list[Any]:
    """Write ``packed`` (commands packed by hiredis) on the redis-py connection ``conn`` in
    one write and read a reply to each, an error reply in its place as the exception (the
    stream stays in step). A failure on the way may leave replies coming: the caller does
    not reuse ``conn`` then."""
    conn.send_packed_command(packed, check_health=False)
    replies: list[Any] = []
    for _ in packed:
        try:
            replies.append(conn.read_response())
        except redis.exceptions.ResponseError as exc:
            replies.append(exc)
    return replies


def _load(name: str) -> LuaScript:
    return LuaScript(name, assemble(_read(f"{name}.lua")))


ENQUEUE = _load("enqueue")
ENQUEUE_BATCH = _load("enqueue_batch")
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

ALL = (ENQUEUE, ENQUEUE_BATCH, PROMOTE, START, CLAIM_START, APPEND_LOGS, COMPLETE, RECOVER, REJECT,
       DEPLOY_SCRIPT, RETRY, RELEASE, CANCEL, CANCEL_MANY, SET_LOCK)


def load_all(client: redis.Redis, scripts: Iterable[LuaScript] = ALL) -> None:
    """Load every script (on every primary of a cluster), so pipelines can call them by SHA."""
    for script in scripts:
        client.script_load(script.source)


def run_pipeline(client: redis.Redis, pipe: redis.client.Pipeline,
                 scripts: Iterable[LuaScript] = ALL) -> list[Any]:
    """Execute a pipeline of idempotent commands; on NOSCRIPT load ``scripts`` and re-run it.

    The re-run is a new pipeline of the commands queued in ``pipe``: a pipeline is
    empty once it ran, and a cluster's keeps its commands elsewhere than a server's.
    """
    commands = [_args_of(command) for command in queued_commands(pipe)]
    try:
        answers: list[Any] = pipe.execute()
        return answers
    except redis.exceptions.NoScriptError:
        load_all(client, scripts)
        again = client.pipeline(transaction=False)
        for args, options in commands:
            again.execute_command(*args, **options)
        retried: list[Any] = again.execute()
        return retried


def queued_commands(pipe: redis.client.Pipeline) -> list[Any]:
    """The commands queued in ``pipe`` (a cluster pipeline keeps them in its strategy)."""
    strategy = getattr(pipe, "_execution_strategy", None)
    return list(pipe.command_stack if strategy is None else strategy.command_queue)


def _args_of(command: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A queued command's arguments and options: a tuple in a server's pipeline, an object
    in a cluster's."""
    if isinstance(command, tuple):
        return command[0], command[1]
    return tuple(command.args), dict(command.options)
