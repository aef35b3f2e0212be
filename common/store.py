"""The atomic transitions of a job, as Python methods: the only code that writes job keys.

Each transition is one Lua script in the group's hash slot (``common/lua/``);
the methods here build its keys and arguments, convert redis-py errors, and
decode what comes back.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import hiredis
import msgpack
import redis

from common import codec, indexes, luascripts, metrics
from common.clock import Clock, now_ms
from common.connection import is_cluster, max_block_s, move_all_back, queue_delete, redis_errors
from common.errors import (
    BadRecord,
    DuplicateJob,
    GristmillError,
    JobTimeout,
    NotFound,
    RedisUnavailable,
    WorkerFenced,
)
from common.instance import InstanceSettings
from common.keys import (
    DONE_TTL_S,
    EVENTS_MAXLEN,
    GONE_TTL_S,
    INBOX_WAKE,
    LOGS_MAXLEN,
    GroupKeys,
    Keys,
)
from common.models import Job, Status, UnreadableJob

SCAN_PAGE = 1000
# Jobs per enqueue_batch.lua call: ~5 ms of Redis at most, so the fleet's other commands
# (claims, heartbeats) never wait long behind an admission.
RUN = 100
K = TypeVar("K")
T = TypeVar("T")
CANCEL_BATCH = 250  # ids per cancel_many.lua call: Redis is busy ~0.1 ms per id
ADMISSION_POLL_S = 0.05
UNBLOCK_RETRY_S = 0.02  # Blocker.interrupt: how often it tries CLIENT UNBLOCK again
UNBLOCK_TRY_S = 1.0  # and for how long at most
FENCED = -1
FENCED_ANSWER = [b"gone"]  # claim_start.lua's answer to a worker presumed dead
NEW_SECRETS = -2


@dataclass(frozen=True)
class PromoteResult:
    moved: int
    next_due_ms: int | None
    max_lag_ms: int


@dataclass(frozen=True)
class NextClaim:
    """A worker slot's next claim (``claim_start`` of one job), sent in the same write as the
    completion it follows: one request a job under load, not two."""

    group: str
    worker_id: str
    claim_prefix: str  # fresh for each claim


@dataclass(frozen=True)
class Completed:
    """A completion's answer (as :meth:`Store.complete`'s) and, when it carried a
    :class:`NextClaim`, the jobs that claim started (empty: ready had none)."""

    outcome: int
    claimed: list[Job] | None = None


@dataclass(frozen=True)
class Completion:
    """One attempt's outcome for :meth:`Store.complete_many` (the arguments of ``complete``)."""

    job: Job
    status: Status
    fields: dict[str, Any]
    retention_s: int
    notify: str | None = None
    logs: list[tuple[int, str, str]] | None = None
    known_redactions: int | None = None
    max_log_bytes: int = InstanceSettings().max_log_bytes
    then_claim: NextClaim | None = None


@dataclass(frozen=True)
class LogEntry:
    id: str
    attempt: int
    ts_ms: int
    stream: str
    line: str


def _runs(order: list[int], key: Callable[[int], K]) -> list[tuple[K, list[int]]]:
    """``order`` cut into runs of consecutive items of equal ``key``, at most RUN long."""
    runs: list[tuple[K, list[int]]] = []
    for i in order:
        k = key(i)
        if runs and runs[-1][0] == k and len(runs[-1][1]) < RUN:
            runs[-1][1].append(i)
        else:
            runs.append((k, [i]))
    return runs


class Blocker:
    """A connection of its own for one thread's long blocking calls, which :meth:`interrupt`
    (from any thread) ends at once and for good, by ``CLIENT UNBLOCK``.

    So a worker can block for as long as its socket timeout allows (an idle worker makes a
    call every half minute, not every two seconds) and still stop at once. ``route_key``
    picks the node on a cluster (the blocking calls' keys are in its slot). Each call first
    asks the connection's id (one ``CLIENT ID``): a reconnection changes it.
    """

    def __init__(self, client: redis.Redis, route_key: str) -> None:
        self._base, self._route_key = client, route_key
        self._conn: redis.Redis | None = None  # single-connection client on the key's node
        self._node: redis.Redis | None = None  # the node's shared client, for the UNBLOCK
        self._lock = threading.Lock()
        self._blocked_id: int | None = None
        self.interrupted = False

    def call(self, command: str, *args: Any) -> Any:
        """Run one blocking command; None at once after :meth:`interrupt`."""
        return self._blocking(lambda conn: conn.execute_command(command, *args))

    def calls(self, commands: list[tuple[Any, ...]]) -> list[Any] | None:
        """A blocking command and the commands behind it, in one write: Redis runs those once
        the first returned (other clients' commands may come between), with no round trip
        of ours between. The replies in order, an error reply in its place as the exception
        (MOVED raised); None at once after :meth:`interrupt`."""
        def send(conn: redis.Redis) -> list[Any]:
            connection = conn.connection
            assert connection is not None  # a single-connection client's
            try:
                replies = luascripts.exchange(
                    connection, [hiredis.pack_command(command) for command in commands])
            except BaseException:
                self._drop()  # a reply may be on its way: this connection is not reused
                raise
            for reply in replies:
                if _moved(reply):
                    raise reply
            return replies

        replies: list[Any] | None = self._blocking(send)
        return replies

    def _blocking(self, send: Callable[[redis.Redis], T]) -> T | None:
        """``send`` on this blocker's connection, interruptible; None if interrupted."""
        conn = self._connection()
        try:
            client_id = int(conn.client_id())
            with self._lock:
                if self.interrupted:
                    return None
                self._blocked_id = client_id
            return send(conn)
        except redis.exceptions.RedisError as exc:
            self._drop()  # a fresh connection (and slot map, after MOVED) next time
            if _moved(exc) and is_cluster(self._base):
                self._base.nodes_manager.initialize()
                # The slot has a new node (a failover, a resharding): the next call goes there.
                raise RedisUnavailable(f"the blocking call's slot moved ({exc}); the slot "
                                       "map is read again") from exc
            raise
        finally:
            with self._lock:
                self._blocked_id = None

    def interrupt(self) -> None:
        """End the blocked call now (it answers as if its time ran out) and every later one.

        The call may be between telling its id and being parked by Redis, where an UNBLOCK
        finds nothing blocked: so it is repeated (every 20 ms, for up to a second) until
        Redis says it unblocked the client or the call has returned."""
        with self._lock:
            self.interrupted = True
        give_up = time.monotonic() + UNBLOCK_TRY_S
        while True:
            with self._lock:
                client_id, node = self._blocked_id, self._node
            if client_id is None or node is None:
                return
            with contextlib.suppress(redis.exceptions.RedisError):
                if node.client_unblock(client_id):
                    return
            if time.monotonic() >= give_up:
                return
            time.sleep(UNBLOCK_RETRY_S)

    def close(self) -> None:
        self._drop()

    def _connection(self) -> redis.Redis:
        with self._lock:
            if self._conn is None or self._node is None:
                node = self._base.get_node_from_key(self._route_key).redis_connection \
                    if is_cluster(self._base) else self._base
                self._node = node
                self._conn = redis.Redis(connection_pool=node.connection_pool,
                                         single_connection_client=True)
            return self._conn

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(redis.exceptions.RedisError):
                conn.close()


def _moved(reply: object) -> bool:
    """A MOVED answer (redis-py parses it into a MovedError whose text lacks the word)."""
    return isinstance(reply, redis.exceptions.MovedError) or (
        isinstance(reply, redis.exceptions.ResponseError) and str(reply).startswith("MOVED"))


def _text_or_none(value: bytes | None) -> str | None:
    try:
        return value.decode() if value is not None else None
    except UnicodeDecodeError:
        return None


def _flatten(fields: dict[str, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


def _status_keys(g: GroupKeys, *statuses: Status) -> list[str]:
    return [g.index(indexes.status_entry(s)) for s in statuses]


def _identity_keys(g: GroupKeys, created_by: str, permissioned_as: str, *parts: str) -> list[str]:
    """by:…:<part>, as:…:<part> for each part: the sets a completion moves the job between."""
    return [g.index(e) for part in parts
            for e in indexes.identity_entries(created_by, permissioned_as, part)]


class Store:
    """Job transitions on one Redis, in one namespace."""

    def __init__(self, client: redis.Redis, keys: Keys, *, clock: Clock = now_ms) -> None:
        self.client = client
        self.keys = keys
        self.clock = clock
        self.max_block_s = max_block_s(client)
        self.cluster = is_cluster(client)
        # Groups this process queued jobs into: a scheduler starts their promoters at its
        # next tick without reading gm:groups (an in-place set update is atomic under the GIL).
        self.groups_written: set[str] = set()
        self._direct: luascripts.DirectCalls | None = None

    def use_direct_calls(self) -> None:
        """Send the per-job calls of a worker (claim_start, append_logs, complete) on
        connections of their own, not through redis-py's pool (``DirectCalls``: about half
        the CPU a call). A single server only: on a cluster, nothing changes."""
        if not self.cluster and self._direct is None:
            self._direct = luascripts.DirectCalls(self.client)

    def close_direct_calls(self) -> None:
        if self._direct is not None:
            self._direct.close()

    def _script(self, script: luascripts.LuaScript, keys: list[str],
                args: list[Any]) -> Any:
        if self._direct is not None:
            return self._direct(script, keys, args)
        return script(self.client, keys, args)

    def block_s(self, wanted_s: float) -> float:
        """``wanted_s``, shortened to what the connection's socket timeout allows.

        Every blocking call goes through here, so an idle fleet never hits its own
        socket timeout (callers loop; a shorter block only means one more call).
        """
        return wanted_s if self.max_block_s is None else min(wanted_s, self.max_block_s)

    # -- enqueue ---------------------------------------------------------------------------

    @redis_errors
    def enqueue(self, job: Job, *, fresh_id: bool) -> None:
        """Queue a new job; raise DuplicateJob when its id exists (it is never run twice).

        ``fresh_id``: the id was just generated here, so it cannot exist and the
        location and the record are written in one round trip (two on a cluster,
        see :meth:`_globals_first`). A producer's own id is claimed first, so it can
        never end up in two groups.
        """
        g = self.keys.group(job.group)
        loc = self.keys.jobloc(job.id)
        # Encoded before the location is claimed: a record that cannot be encoded
        # must not leave gm:jobloc:<id> pointing at nothing.
        ix = indexes.record_field(job)
        record = _flatten({**job.to_redis(), "ix": ix})
        pipe = self.client.pipeline(transaction=False)
        if not fresh_id:
            previous = self.client.set(loc, job.group, nx=True, get=True)
            if previous is not None and previous.decode() != job.group:
                raise DuplicateJob(job.id)
        else:
            pipe.set(loc, job.group)
        pipe.sadd(self.keys.groups, job.group)
        pipe = self._globals_first(pipe)
        luascripts.ENQUEUE.queue(
            pipe,
            [g.job(job.id), g.scheduled, g.ready, g.wake, g.events,
             *(g.index(e) for e in indexes.entries_for(job, Status.QUEUED))],
            [job.id, job.scheduled_for, self.clock(), job.priority, EVENTS_MAXLEN,
             indexes.member(job.created_at, job.id), *record],
        )
        state = luascripts.run_pipeline(self.client, pipe)[-1]
        if state == 0:
            raise DuplicateJob(job.id)
        metrics.JOBS_ENQUEUED.labels(group=job.group, kind=job.kind.value).inc()

    def _globals_first(self, pipe: Any) -> Any:
        """On a cluster, run the global writes queued so far (location, groups) and give a
        new pipeline for the group's script; on a server, ``pipe`` itself.

        A server runs a pipeline in order, so the location is written before the record
        (a record always has a location). A cluster pipeline sends each shard its part
        at once, in no order between shards: the location is a round trip of its own.
        """
        if not self.cluster:
            return pipe
        pipe.execute()
        return self.client.pipeline(transaction=False)

    @redis_errors
    def set_fields(self, job: Job, fields: dict[str, str]) -> None:
        """Add informative fields to a live record (a flow's early result); none that a
        transition reads."""
        key = self.keys.group(job.group).job(job.id)
        if self.client.exists(key):
            self.client.hset(key, mapping=fields)

    @redis_errors
    def enqueue_many(self, jobs: list[tuple[Job, bool]]) -> list[bool]:
        """Queue a batch of new jobs, ``(job, fresh_id)`` each, in one or two round trips.

        Answers, per job, True when it was queued and False when a job of its id
        exists (it is not run twice), as :meth:`enqueue` would raise DuplicateJob.
        Producers' own ids are claimed first (one pipelined ``SET NX GET`` each),
        then every record and queue write goes in one pipeline: one
        ``enqueue_batch.lua`` call per run of up to RUN consecutive jobs of one group
        that join the same indexes (the jobs of one template), in their order.
        """
        records = [_flatten({**job.to_redis(), "ix": indexes.record_field(job)})
                   for job, _ in jobs]
        queued = [True] * len(jobs)
        chosen = [i for i, (_, fresh) in enumerate(jobs) if not fresh]
        if chosen:
            claims = self.client.pipeline(transaction=False)
            for i in chosen:
                claims.set(self.keys.jobloc(jobs[i][0].id), jobs[i][0].group, nx=True, get=True)
            for i, previous in zip(chosen, claims.execute(), strict=True):
                if previous is not None and previous.decode() != jobs[i][0].group:
                    queued[i] = False
        now = self.clock()
        sent = [i for i in range(len(jobs)) if queued[i]]
        pipe = self.client.pipeline(transaction=False)
        for group in {jobs[i][0].group for i in sent}:
            pipe.sadd(self.keys.groups, group)
        for i in sent:
            if jobs[i][1]:  # fresh ids: their locations, before their records
                pipe.set(self.keys.jobloc(jobs[i][0].id), jobs[i][0].group)
        head = len(luascripts.queued_commands(pipe))
        pipe = self._globals_first(pipe)
        if self.cluster:
            head = 0
        runs = _runs(sent, lambda i: (jobs[i][0].group,
                                      tuple(indexes.entries_for(jobs[i][0], Status.QUEUED))))
        for (group, entries), run in runs:
            g = self.keys.group(group)
            batch = [[jobs[i][0].id, str(jobs[i][0].scheduled_for), jobs[i][0].priority,
                      indexes.member(jobs[i][0].created_at, jobs[i][0].id),
                      [v if isinstance(v, bytes | str) else str(v) for v in records[i]]]
                     for i in run]
            luascripts.ENQUEUE_BATCH.queue(
                pipe,
                [g.scheduled, g.ready, g.wake, g.events, *(g.index(e) for e in entries),
                 *(g.job(jobs[i][0].id) for i in run)],
                # Without msgpack's bin type, which Redis's cmsgpack cannot read: bytes
                # go as raw strings (a Lua string holds any bytes).
                [now, EVENTS_MAXLEN, len(entries), msgpack.packb(batch, use_bin_type=False)],
            )
        answers = iter(state for states in luascripts.run_pipeline(self.client, pipe)[head:]
                       for state in states)
        self.groups_written |= {jobs[i][0].group for i in sent}
        for i in sent:
            if next(answers) == 0:
                queued[i] = False
            else:
                job = jobs[i][0]
                metrics.JOBS_ENQUEUED.labels(group=job.group, kind=job.kind.value).inc()
        return queued

    @redis_errors
    def reject(self, job: Job, *, retention_s: int, fresh_id: bool) -> str:
        """Record a job that could not be accepted as completed ``failure``; return its id.

        A producer's id is kept when it is free, or when its location points at
        no record (an admission interrupted between the two writes). When a
        job of that id exists (a producer reused an id with a bad spec), the
        rejection is recorded under a new id rather than lost or clobbering.
        """
        if not fresh_id and not self._claim_location(job):
            job = job.model_copy(update={"id": str(uuid.uuid4())})
        g = self.keys.group(job.group)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.jobloc(job.id), job.group)
        pipe.sadd(self.keys.groups, job.group)
        pipe = self._globals_first(pipe)
        luascripts.REJECT.queue(
            pipe,
            [g.job(job.id), g.completed, g.done(job.id), g.events, g.ixtrim,
             *(g.index(e) for e in indexes.entries_for(job, Status.FAILURE))],
            [job.id, job.completed_at or self.clock(), retention_s, DONE_TTL_S,
             EVENTS_MAXLEN, indexes.member(job.created_at, job.id),
             indexes.trim_line(job, Status.FAILURE),
             *_flatten({**job.to_redis(), "ix": indexes.record_field(job)})],
        )
        luascripts.run_pipeline(self.client, pipe)
        metrics.JOBS_COMPLETED.labels(
            group=job.group, kind=job.kind.value, status=Status.FAILURE.value
        ).inc()
        return job.id

    def _claim_location(self, job: Job) -> bool:
        loc = self.keys.jobloc(job.id)
        if self.client.set(loc, job.group, nx=True):
            return True
        held = self.client.get(loc)
        if held is None:
            return bool(self.client.set(loc, job.group, nx=True))
        return not self.client.exists(self.keys.group(held.decode()).job(job.id))

    # -- the group's queue -----------------------------------------------------------------

    @redis_errors
    def promote(self, group: str, *, now: int, batch: int = 500) -> PromoteResult:
        """Move due jobs of ``group`` to ready; tell when the next one is due."""
        g = self.keys.group(group)
        moved, next_due, lag = luascripts.PROMOTE(self.client, [g.scheduled, g.ready], [now, batch])
        return PromoteResult(int(moved), None if int(next_due) < 0 else int(next_due), int(lag))

    @redis_errors
    def wait_for_wake(self, group: str, timeout_s: float) -> bool:
        """Block until an earlier job nudges the group's promoter, or the timeout."""
        wake = self.keys.group(group).wake
        return self.client.blpop([wake], timeout=self.block_s(timeout_s)) is not None

    @redis_errors
    def take_inbox_spec(self, processing: str, block_s: float) -> bytes | None:
        """Move the oldest inbox spec into a scheduler's processing list (BLMOVE), or None."""
        spec: bytes | None = self.client.blmove(self.keys.inbox, processing, self.block_s(block_s),
                                                "RIGHT", "LEFT")
        return spec

    @redis_errors
    def take_inbox_specs(self, processing: str, count: int) -> list[bytes]:
        """Up to ``count`` more inbox specs moved into the processing list (none waiting: one
        LLEN; else one more round trip, which moves only as many as the inbox held)."""
        waiting = int(self.client.llen(self.keys.inbox))
        if not waiting:
            return []
        pipe = self.client.pipeline(transaction=False)
        for _ in range(min(count, waiting)):
            pipe.lmove(self.keys.inbox, processing, "RIGHT", "LEFT")
        return [spec for spec in pipe.execute() if spec is not None]

    @redis_errors
    def forget_inbox_specs(self, processing: str, specs: list[bytes]) -> None:
        """Remove admitted specs from the processing list (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for spec in specs:
            pipe.lrem(processing, 1, spec)
        pipe.execute()

    @redis_errors
    def existing_ids(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` name a job already (one pipelined EXISTS each, one round trip)."""
        if not ids:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.exists(self.keys.jobloc(job_id))
        return {job_id for job_id, found in zip(ids, pipe.execute(), strict=True) if found}

    @redis_errors
    def push_batch(self, batch_id: str, payload: bytes) -> None:
        """Store a batch of specs and push its reference to the inbox: one round trip, one
        transaction (both keys are in the inbox's slot), so the reference never names
        nothing and the batch is never left without one."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.keys.inbox_batch(batch_id), "specs", payload)
        pipe.lpush(self.keys.inbox, self.keys.batch_ref(batch_id))
        pipe.execute()

    @redis_errors
    def inbox_batch(self, batch_id: str) -> tuple[bytes | None, bool]:
        """The stored batch a reference names (None: never written, or admitted), and
        whether this is the first admission to take it (``started`` set now, one round
        trip): a batch taken again after a crash may have been admitted in part."""
        key = self.keys.inbox_batch(batch_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hget(key, "specs")
        pipe.hsetnx(key, "started", 1)
        payload, first = pipe.execute()
        return payload, bool(first) and payload is not None

    @redis_errors
    def forget_inbox_batch(self, processing: str, batch_id: str) -> None:
        """A batch admitted: its reference leaves the processing list and the batch goes,
        together (one transaction in the inbox's slot)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.lrem(processing, 1, self.keys.batch_ref(batch_id))
        pipe.delete(self.keys.inbox_batch(batch_id))
        pipe.execute()

    @redis_errors
    def wake_inbox(self) -> None:
        """Push a wake element onto the inbox's consuming end: the next BLMOVE takes it."""
        self.client.rpush(self.keys.inbox, INBOX_WAKE)

    @redis_errors
    def inbox_waiting(self) -> int:
        """How many elements wait in the inbox (a stored batch counts once)."""
        return int(self.client.llen(self.keys.inbox))

    @redis_errors
    def nudge(self, group: str) -> None:
        """Wake the group's promoter now."""
        self.client.lpush(self.keys.group(group).wake, "0")

    def blocker(self, group: str) -> Blocker:
        """A :class:`Blocker` for the group's blocking calls (claim, control)."""
        return Blocker(self.client, self.keys.group(group).ready)

    @redis_errors
    def claim(self, group: str, worker_id: str, timeout_s: float,
              blocker: Blocker | None = None) -> str | None:
        """Take the oldest ready id into the worker's running list (BLMOVE), unstarted;
        through ``blocker``, which another thread may interrupt, when given. Kept for tools
        and tests (a claimed, never started id); the worker claims with claim_start_blocking."""
        g = self.keys.group(group)
        if blocker is not None:
            job_id = blocker.call("BLMOVE", g.ready, g.running(worker_id), "LEFT", "RIGHT",
                                  self.block_s(timeout_s))
        else:
            job_id = self.client.blmove(g.ready, g.running(worker_id), self.block_s(timeout_s),
                                        "LEFT", "RIGHT")
        return None if job_id is None else job_id.decode()

    @redis_errors
    def claim_start_blocking(self, group: str, worker_id: str, count: int, claim_prefix: str,
                             timeout_s: float, blocker: Blocker) -> list[Job]:
        """An idle worker's claim: block until ready has an id (BLMOVE into the worker's
        landing list, through ``blocker``), then start it and more ready ids, up to ``count``
        jobs in all, as :meth:`claim_start` does. The claim_start call rides behind the
        BLMOVE in the same write, so Redis starts the job once it is moved: one round trip
        where a BLMOVE and then a claim_start took two. [] when the block timed out or was
        interrupted."""
        g = self.keys.group(group)
        claim = NextClaim(group, worker_id, claim_prefix)
        keys, args = self._claim_start_call(claim, count, behind_block=True)
        replies = blocker.calls([
            ("BLMOVE", g.ready, g.landing(worker_id), "LEFT", "RIGHT", self.block_s(timeout_s)),
            ("EVALSHA", luascripts.CLAIM_START.sha, len(keys), *keys, *args)])
        if replies is None:
            return []
        moved, answer = replies
        if isinstance(moved, Exception):
            raise moved
        if isinstance(answer, redis.exceptions.NoScriptError):
            # It did not run (a restarted or flushed server): a claim_start of its own loads
            # it and starts what landed.
            return [] if moved is None else \
                self.claim_start(group, worker_id, count, claim_prefix)
        if isinstance(answer, Exception):
            raise answer
        return self._started_or_fenced(group, worker_id, answer)

    @redis_errors
    def fence_gone(self, group: str, worker_id: str) -> None:
        """Presume a worker dead: its claims start nothing (claim_start.lua) until it
        registers again, or GONE_TTL_S passes."""
        self.client.set(self.keys.group(group).gone(worker_id), 1, ex=GONE_TTL_S)

    @redis_errors
    def unfence_gone(self, group: str, worker_id: str) -> None:
        """The worker presumed dead was not: its claims start jobs again."""
        self.client.delete(self.keys.group(group).gone(worker_id))

    @redis_errors
    def unland(self, group: str, worker_id: str) -> int:
        """Put the ids a worker's BLMOVE landed and no claim started back at the head of ready,
        in their order (the worker stops, or is presumed dead); how many."""
        g = self.keys.group(group)
        return move_all_back(self.client, g.landing(worker_id), g.ready)

    @redis_errors
    def claim_start(self, group: str, worker_id: str, count: int,
                    claim_prefix: str) -> list[Job]:
        """Start up to ``count`` jobs in one call: ids the worker's blocking claim landed and
        no call started yet (:meth:`claim_start_blocking`), then ready ids. The jobs now
        running (canceled ones are dropped). Each gets the claim ``<claim_prefix><n as 4 hex
        digits>``: the prefix must be fresh. A record this version cannot read comes back as
        an :class:`UnreadableJob`, started like the others: the worker records it failed,
        saying why."""
        keys, args = self._claim_start_call(NextClaim(group, worker_id, claim_prefix), count)
        return self._started_or_fenced(group, worker_id,
                                       self._script(luascripts.CLAIM_START, keys, args))

    def _claim_start_call(self, claim: NextClaim, count: int, *,
                          behind_block: bool = False) -> tuple[list[str], list[Any]]:
        """claim_start.lua's keys and arguments; ``behind_block``: sent behind a BLMOVE."""
        g = self.keys.group(claim.group)
        return ([g.ready, g.running(claim.worker_id), g.events,
                 *_status_keys(g, Status.QUEUED, Status.RUNNING), g.landing(claim.worker_id),
                 g.gone(claim.worker_id)],
                [g.job(""), claim.worker_id, "" if behind_block else self.clock(),
                 claim.claim_prefix, EVENTS_MAXLEN, count, int(behind_block)])

    @classmethod
    def _started_or_fenced(cls, group: str, worker_id: str, answer: list[Any]) -> list[Job]:
        """The jobs in claim_start.lua's answer; WorkerFenced when it says the worker is
        presumed dead."""
        if answer == FENCED_ANSWER:
            raise WorkerFenced(f"worker {worker_id} was presumed dead (silent past its lease) "
                               "and its jobs recovered: it claims nothing until it registers "
                               "again, at its next heartbeat")
        return cls._claimed(group, worker_id, answer)

    @staticmethod
    def _claimed(group: str, worker_id: str, answer: list[Any]) -> list[Job]:
        """The jobs in claim_start.lua's answer (id, claim, record for each); none when it
        says the worker is presumed dead (a slot's claim riding a completion: the claim
        loop's next claim meets it)."""
        if answer == FENCED_ANSWER:
            return []
        jobs: list[Job] = []
        for i in range(0, len(answer), 3):
            try:
                jobs.append(Job.from_flat(answer[i + 2]))
            except BadRecord as exc:  # still started, so the worker records it failed
                jobs.append(UnreadableJob.stand_in(
                    answer[i + 2], str(exc), job_id=answer[i].decode(), group=group,
                    worker=worker_id, claim=answer[i + 1].decode()))
        return jobs

    @redis_errors
    def start(self, group: str, job_id: str, worker_id: str, claim: str) -> Job | None:
        """Mark a claimed job running under ``claim``; None if it is no longer queued."""
        g = self.keys.group(group)
        fields = luascripts.START(
            self.client,
            [g.job(job_id), g.running(worker_id), g.events,
             *_status_keys(g, Status.QUEUED, Status.RUNNING)],
            [job_id, worker_id, self.clock(), claim, EVENTS_MAXLEN],
        )
        if not fields:
            return None
        return Job.from_flat(fields)

    @redis_errors
    def append_logs(
        self, job: Job, lines: list[tuple[int, str, str]], *, known_redactions: int = 0,
        max_bytes: int = InstanceSettings().max_log_bytes,
    ) -> int:
        """Append (ts_ms, stream, line) tuples; beyond ``max_bytes`` per job, count and drop.

        Returns the count taken, FENCED (-1) when the attempt was fenced off,
        or NEW_SECRETS (-2) when the job read secrets beyond ``known_redactions``:
        nothing was written; fetch them with :meth:`redactions` and send again.
        """
        g = self.keys.group(job.group)
        flat = [item for entry in lines for item in entry]
        return int(self._script(
            luascripts.APPEND_LOGS,
            [g.job(job.id), g.logs(job.id), g.redact(job.id)],
            [job.claim or "", LOGS_MAXLEN, job.attempt, known_redactions, max_bytes, *flat],
        ))

    @redis_errors
    def redactions(self, job: Job) -> list[str]:
        """The entries the API recorded for each secret the job read."""
        return sorted(v.decode() for v in self.client.smembers(self.keys.group(job.group).redact(job.id)))

    def _entry(self, job: Job, status: str, fields: dict[str, Any]) -> bytes:
        """This attempt's line in the job's attempt history."""
        return codec.pack({
            "attempt": job.attempt, "worker": job.worker, "status": status,
            "started_at": job.started_at, "completed_at": self.clock(),
            "duration_ms": fields.get("duration_ms"), "error": fields.get("error"),
        })

    @redis_errors
    def complete(
        self, job: Job, status: Status, fields: dict[str, Any], *, retention_s: int,
        notify: str | None = None, logs: list[tuple[int, str, str]] | None = None,
        known_redactions: int | None = None, max_log_bytes: int = InstanceSettings().max_log_bytes,
    ) -> int:
        """Write an attempt's final outcome: 1 done, 2 already done by this claim, 0 fenced off,
        NEW_SECRETS (-2, nothing written) when the job read secrets beyond ``known_redactions``.

        ``notify``: a flow step's outcome (its flow's wire format), pushed to the group's
        ``flownotify`` by the same script. ``logs``: the attempt's last (ts_ms, stream, line)
        lines, appended by the same script as :meth:`append_logs` would. ``known_redactions``
        (None: no check): the redaction entries the lines and ``fields`` were redacted with.
        """
        return self.complete_many([Completion(job, status, fields, retention_s, notify, logs,
                                              known_redactions, max_log_bytes)])[0]

    @redis_errors
    def complete_many(self, completions: list[Completion]) -> list[int]:
        """:meth:`complete` for each, in one pipeline of ``complete.lua`` calls (each fenced
        and checked on its own); the answers in order."""
        return [answer.outcome for answer in self.complete_then_claim(completions)]

    @redis_errors
    def complete_then_claim(self, completions: list[Completion]) -> list[Completed]:
        """:meth:`complete_many`, each completion followed by its ``then_claim`` if it has one:
        all in one write on a single server (a cluster client makes the claims after the
        completions, one call each). A claim runs whatever its completion answers."""
        calls = [self._completion_call(c) for c in completions]
        claims = [(i, c.then_claim) for i, c in enumerate(completions)
                  if c.then_claim is not None]
        claim_calls = [self._claim_start_call(claim, 1) for _, claim in claims]
        if self._direct is not None:
            replies = self._direct.calls(
                [(luascripts.COMPLETE, keys, args) for keys, args in calls]
                + [(luascripts.CLAIM_START, keys, args) for keys, args in claim_calls])
            answers, claim_answers = replies[:len(calls)], replies[len(calls):]
        else:
            if len(calls) == 1:
                answers = [luascripts.COMPLETE(self.client, *calls[0])]
            else:
                pipe = self.client.pipeline(transaction=False)
                for keys, args in calls:
                    luascripts.COMPLETE.queue(pipe, keys, args)
                answers = luascripts.run_pipeline(self.client, pipe, [luascripts.COMPLETE])
            claim_answers = [luascripts.CLAIM_START(self.client, *call) for call in claim_calls]
        claimed = {i: self._claimed(claim.group, claim.worker_id, answer)
                   for (i, claim), answer in zip(claims, claim_answers, strict=True)}
        out: list[Completed] = []
        for i, (c, answer) in enumerate(zip(completions, answers, strict=True)):
            outcome = int(answer)
            if outcome == 1:
                metrics.child(metrics.JOBS_COMPLETED, c.job.group, c.job.kind.value,
                              c.status.value).inc()
            out.append(Completed(outcome, claimed.get(i)))
        return out

    def _completion_call(self, c: Completion) -> tuple[list[str], list[Any]]:
        """complete.lua's keys and arguments for one completion."""
        job, status, g = c.job, c.status, self.keys.group(c.job.group)
        worker = job.worker or ""
        encoded = {k: codec.pack(v) if k in codec.PACKED_FIELDS else v
                   for k, v in c.fields.items()}
        lines = c.logs or []
        return (
            [g.job(job.id), g.running(worker), g.completed, g.logs(job.id),
             g.done(job.id), g.events, g.attempts(job.id),
             *_status_keys(g, Status.RUNNING, status), g.ixtrim,
             *_identity_keys(g, job.created_by, job.permissioned_as, indexes.LIVE,
                             indexes.part_of(status)), g.flow_notify, g.redact(job.id)],
            [job.id, worker, job.claim or "", self.clock(), c.retention_s, DONE_TTL_S,
             EVENTS_MAXLEN, status.value, self._entry(job, status.value, c.fields),
             c.notify or "", "" if c.known_redactions is None else c.known_redactions,
             len(lines), LOGS_MAXLEN, c.max_log_bytes,
             *[item for line in lines for item in line], *_flatten(encoded)],
        )

    @redis_errors
    def retry(self, job: Job, fields: dict[str, Any], *, at_ms: int) -> bool:
        """Put a failed attempt back in the queue for ``at_ms``; False when fenced off."""
        g = self.keys.group(job.group)
        worker = job.worker or ""
        requeued = luascripts.RETRY(
            self.client,
            [g.job(job.id), g.running(worker), g.scheduled, g.ready, g.wake, g.events,
             g.attempts(job.id), *_status_keys(g, Status.RUNNING, Status.QUEUED)],
            [job.id, worker, job.claim or "", self.clock(), at_ms, EVENTS_MAXLEN,
             self._entry(job, Status.FAILURE.value, fields), codec.pack(fields.get("error"))],
        )
        return bool(requeued)

    @redis_errors
    def release(self, job: Job) -> bool:
        """Give an unfinished job back (worker stopping): head of ready, nothing counted."""
        g = self.keys.group(job.group)
        worker = job.worker or ""
        released = luascripts.RELEASE(
            self.client,
            [g.job(job.id), g.running(worker), g.ready, g.events, g.attempts(job.id),
             *_status_keys(g, Status.RUNNING, Status.QUEUED)],
            [job.id, worker, job.claim or "", EVENTS_MAXLEN, self._entry(job, "released", {})],
        )
        return bool(released)

    @redis_errors
    def cancel(self, job_id: str, *, by: str, reason: str, retention_s: int) -> str:
        """Cancel a job: ``canceled`` (was queued), ``requested`` (its worker will stop it).

        Raises NotFound, or GristmillError when the job already completed.
        """
        for _ in range(10):
            job = self.get_job(job_id)
            g = self.keys.group(job.group)
            answer = luascripts.CANCEL(
                self.client,
                [g.job(job_id), g.scheduled, g.ready, g.completed, g.logs(job_id), g.done(job_id),
                 g.events, g.attempts(job_id), g.control(job.worker or ""),
                 *_status_keys(g, Status.QUEUED, Status.CANCELED), g.ixtrim,
                 *_identity_keys(g, job.created_by, job.permissioned_as, indexes.LIVE,
                                 Status.CANCELED.value)],
                [job_id, self.clock(), by, reason, retention_s, DONE_TTL_S, EVENTS_MAXLEN,
                 job.worker or "" if job.status == Status.RUNNING else ""],
            )
            verdict: list[str] = [part.decode() for part in answer]
            if verdict[0] == "missing":
                raise NotFound(f"no job {job_id}")
            if verdict[0] == "completed":
                raise GristmillError(
                    f"job {job_id} already completed ({verdict[1]}); there is nothing to cancel"
                )
            if verdict[0] == "canceled":
                metrics.JOBS_COMPLETED.labels(
                    group=job.group, kind=job.kind.value, status=Status.CANCELED.value
                ).inc()
            if verdict[0] != "moved":
                return verdict[0]
        raise GristmillError(f"job {job_id} kept changing state; try again")

    @redis_errors
    def cancel_queued(self, group: str, *, by: str, reason: str, retention_s: int,
                      limit: int | None = None, batch: int = CANCEL_BATCH) -> int:
        """Cancel up to ``limit`` queued jobs of ``group`` (all: None), in batches of one script.

        Reads the ids from ``scheduled`` and ``ready`` page by page; each batch is
        one ``cancel_many.lua`` call. Jobs that started meanwhile are left alone.
        Returns how many were canceled.
        """
        g = self.keys.group(group)
        total = 0
        for source in ("scheduled", "ready"):
            start = 0
            while limit is None or total < limit:
                size = batch if limit is None else min(batch, limit - total)
                if source == "scheduled":
                    # Canceled ids leave scheduled: always read its head.
                    ids = self.client.zrange(g.scheduled, 0, size - 1)
                else:
                    # Canceled ids stay in ready (lazy): page through it.
                    ids = self.client.lrange(g.ready, start, start + size - 1)
                    start += len(ids)
                if not ids:
                    break
                kinds = luascripts.CANCEL_MANY(
                    self.client,
                    [g.scheduled, g.completed, g.events,
                     *_status_keys(g, Status.QUEUED, Status.CANCELED), g.ixtrim,
                     *self._cancel_keys(g, [i.decode() for i in ids])],
                    [self.clock(), by, reason, retention_s, DONE_TTL_S, EVENTS_MAXLEN, *ids],
                )
                done = len(kinds)
                total += done
                for kind in set(kinds):
                    metrics.JOBS_COMPLETED.labels(group=group, kind=kind.decode(),
                                                  status=Status.CANCELED.value).inc(kinds.count(kind))
                if source == "scheduled" and done == 0:
                    break  # the head holds no queued job any more (started or gone)
        return total

    def _cancel_keys(self, g: GroupKeys, ids: list[str]) -> list[str]:
        """Each id's keys for cancel_many.lua: its own four, then its identity sets
        (live and canceled), read first: identities never change."""
        read = self.client.pipeline(transaction=False)
        for job_id in ids:
            read.hmget(g.job(job_id), "created_by", "permissioned_as")
        keys: list[str] = []
        for job_id, who in zip(ids, read.execute(), strict=True):
            created_by, run_as = (v.decode() if v else "" for v in who)
            keys += [g.job(job_id), g.logs(job_id), g.done(job_id), g.attempts(job_id),
                     *_identity_keys(g, created_by, run_as, indexes.LIVE,
                                     Status.CANCELED.value)]
        return keys

    @redis_errors
    def next_control(self, group: str, worker_id: str, timeout_s: float,
                     blocker: Blocker | None = None) -> str | None:
        """Block for the next job id this worker is asked to cancel (through ``blocker``,
        which another thread may interrupt, when given)."""
        key = self.keys.group(group).control(worker_id)
        if blocker is not None:
            answer = blocker.call("BLPOP", key, self.block_s(timeout_s))
        else:
            answer = self.client.blpop([key], timeout=self.block_s(timeout_s))
        return None if answer is None else str(answer[1].decode())

    @redis_errors
    def attempts(self, job: Job) -> list[dict[str, Any]]:
        """The history of the job's finished attempts, oldest first."""
        raw = self.client.lrange(self.keys.group(job.group).attempts(job.id), 0, -1)
        return [codec.unpack(entry) for entry in raw]

    @redis_errors
    def recover(
        self, group: str, job_id: str, dead_worker: str, *, max_restarts: int, retention_s: int
    ) -> str:
        """Re-queue (or fail, when out of restarts) one job of a worker presumed dead."""
        g = self.keys.group(group)
        # Identities never change: read first, so the script gets every key it touches.
        who = self.client.hmget(g.job(job_id), "created_by", "permissioned_as")
        created_by, run_as = (v.decode() if v else "" for v in who)
        error = codec.pack({
            "name": "WorkerLost",
            "message": f"worker {dead_worker} stopped answering while running this job, "
            f"and the job was already restarted {max_restarts} times",
            "traceback": "",
        })
        outcome = luascripts.RECOVER(
            self.client,
            [g.job(job_id), g.running(dead_worker), g.ready, g.completed, g.logs(job_id),
             g.done(job_id), g.events, g.attempts(job_id),
             *_status_keys(g, Status.RUNNING, Status.QUEUED, Status.FAILURE, Status.CANCELED),
             g.ixtrim, *_identity_keys(g, created_by, run_as, indexes.LIVE, Status.FAILURE.value,
                                       Status.CANCELED.value)],
            [job_id, dead_worker, self.clock(), max_restarts, retention_s, DONE_TTL_S,
             EVENTS_MAXLEN, error],
        )
        verdict = str(outcome.decode() if isinstance(outcome, bytes) else outcome)
        if verdict in ("failed", "canceled"):
            # The job completed here (WorkerLost, or a cancel honoured): count it like any other.
            kind = self.client.hget(g.job(job_id), "kind")
            metrics.JOBS_COMPLETED.labels(
                group=group, kind=kind.decode() if kind else "",
                status=Status.FAILURE.value if verdict == "failed" else Status.CANCELED.value,
            ).inc()
        return verdict

    @redis_errors
    def running_ids(self, group: str, worker_id: str) -> list[str]:
        return [i.decode() for i in self.client.lrange(self.keys.group(group).running(worker_id), 0, -1)]

    @redis_errors
    def trim_completed(self, group: str, cutoff_ms: int) -> int:
        """Drop ids completed before ``cutoff_ms`` from the index, with their locations
        and their listing-index entries."""
        self.trim_indexes(group, cutoff_ms)
        g = self.keys.group(group)
        total = 0
        while True:
            ids = self.client.zrange(g.completed, "-inf", cutoff_ms, byscore=True, offset=0,
                                     num=SCAN_PAGE)
            if not ids:
                return total
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:  # one DEL each: every location has a slot of its own
                pipe.delete(self.keys.jobloc(job_id.decode()))
            pipe.execute()
            # Only once the locations are gone (a cluster pipeline keeps no order between
            # shards): a trim interrupted before this line does it again.
            self.client.zrem(g.completed, *ids)
            total += len(ids)

    @redis_errors
    def trim_count(self, group: str, max_jobs: int) -> int:
        """Delete the oldest completed jobs of ``group`` beyond ``max_jobs``, with their keys.

        Count-based retention next to the time-based one: record, logs, attempt
        history, done list, redactions, location and listing-index entries (with
        the job's ``ixtrim`` line) go together, so the indexes and their counts
        stay exact. Idempotent.
        """
        g = self.keys.group(group)
        total = 0
        while True:
            excess = int(self.client.zcard(g.completed)) - max_jobs
            if excess <= 0:
                return total
            ids = [i.decode() for i in self.client.zrange(g.completed, 0, min(excess, SCAN_PAGE) - 1)]
            # A completed record no longer changes: what it says now is what its
            # completing script wrote into the indexes and into ixtrim.
            read = self.client.pipeline(transaction=False)
            for job_id in ids:
                read.hmget(g.job(job_id), "ix", "status", "created_by", "permissioned_as")
            records = read.execute()
            pipe = self.client.pipeline(transaction=False)
            for job_id, (ix, status, created_by, run_as) in zip(ids, records, strict=True):
                if ix is not None and status is not None:
                    line = indexes.completed_line(ix.decode(), status.decode(),
                                                  (created_by or b"").decode(),
                                                  (run_as or b"").decode())
                    self._unindex(pipe, g, line)
                queue_delete(pipe, g.job(job_id), g.logs(job_id), g.attempts(job_id),
                             g.done(job_id), g.redact(job_id))
                pipe.delete(self.keys.jobloc(job_id))
            pipe.execute()
            self.client.zrem(g.completed, *ids)  # last, as in trim_completed
            total += len(ids)

    @redis_errors
    def trim_indexes(self, group: str, cutoff_ms: int) -> int:
        """Remove the index entries of jobs completed before ``cutoff_ms`` (retention).

        Reads ``ixtrim``, not the records: a record may already have expired.
        Idempotent, so two schedulers trimming at once do no harm.
        """
        g = self.keys.group(group)
        total = 0
        while True:
            raw = self.client.zrange(g.ixtrim, "-inf", cutoff_ms, byscore=True, offset=0,
                                     num=SCAN_PAGE)
            if not raw:
                return total
            pipe = self.client.pipeline(transaction=False)
            for line in raw:
                self._unindex(pipe, g, line.decode())
            pipe.execute()
            total += len(raw)

    @staticmethod
    def _unindex(pipe: Any, g: GroupKeys, line: str) -> None:
        """Queue the removal of one completed job's index entries and of its ``ixtrim`` line."""
        trim = indexes.parse_trim(line)
        for entry in trim.entries:
            pipe.zrem(g.index(entry), trim.member)
        pipe.zrem(g.ixtrim, line)

    # -- reading ---------------------------------------------------------------------------

    @redis_errors
    def locate(self, job_id: str) -> str:
        group = self.client.get(self.keys.jobloc(job_id))
        if group is None:
            raise NotFound(f"no job {job_id} (never enqueued, or older than the retention period)")
        return str(group.decode())

    @redis_errors
    def get_job(self, job_id: str) -> Job:
        group = self.locate(job_id)
        fields = self.client.hgetall(self.keys.group(group).job(job_id))
        if not fields:
            raise NotFound(f"job {job_id} has expired (older than the retention period)")
        try:
            return Job.from_redis(fields)
        except BadRecord as exc:  # named by the id asked for: the record's own may be the damage
            raise BadRecord(job_id, exc.problem) from None

    @redis_errors
    def owners(self, job_id: str) -> tuple[str | None, str | None]:
        """``created_by`` and ``permissioned_as`` as stored, None where absent or unreadable:
        who may see a record :meth:`get_job` cannot read (a damaged one)."""
        raw = self.client.hmget(self.keys.group(self.locate(job_id)).job(job_id),
                                ["created_by", "permissioned_as"])
        created_by, permissioned_as = (_text_or_none(value) for value in raw)
        return created_by, permissioned_as

    @redis_errors
    def wait(self, job_id: str, timeout_s: float) -> Job:
        """Block until the job completes; raise JobTimeout after ``timeout_s``."""
        deadline = self.clock() + int(timeout_s * 1000)
        while True:
            try:
                job = self.get_job(job_id)
            except NotFound:
                # An inbox spec with a producer-chosen id exists only once admitted.
                if self.clock() >= deadline:
                    raise
                time.sleep(ADMISSION_POLL_S)
                continue
            if job.is_terminal:
                return job
            left_s = (deadline - self.clock()) / 1000
            if left_s <= 0:
                raise JobTimeout(f"job {job_id} is still {job.status} after {timeout_s:g} s")
            done = self.keys.group(job.group).done(job_id)
            # Rotating the list onto itself leaves the element for other waiters.
            self.client.blmove(done, done, self.block_s(min(left_s, 5.0)), "RIGHT", "LEFT")

    def iter_logs(self, job_id: str, *, follow: bool = False, after: str = "0-0") -> Iterator[LogEntry]:
        """The job's log entries after stream id ``after``; with ``follow``, new ones until
        the job completes."""
        while True:
            entries = self.logs(job_id, after=after)
            yield from entries
            if entries:
                after = entries[-1].id
                continue
            if not follow or self.get_job(job_id).is_terminal:
                # One last read: lines written just before completion.
                yield from self.logs(job_id, after=after)
                return
            for entry in self.logs(job_id, after=after, block_ms=1000):
                after = entry.id
                yield entry

    @redis_errors
    def logs(
        self, job_id: str, *, after: str = "0-0", block_ms: int | None = None, count: int = 1000
    ) -> list[LogEntry]:
        """Log entries after stream id ``after``; with ``block_ms``, wait for new ones."""
        key = self.keys.group(self.locate(job_id)).logs(job_id)
        if block_ms is None:
            rows = self.client.xrange(key, min=f"({after}" if after != "0-0" else "-", count=count)
        else:
            block_ms = max(1, int(self.block_s(block_ms / 1000) * 1000))
            answer = self.client.xread({key: after}, count=count, block=block_ms)
            rows = answer[0][1] if answer else []
        return [
            LogEntry(
                id=entry_id.decode(),
                attempt=int(fields.get(b"a", b"0")),
                ts_ms=int(fields.get(b"t", b"0")),
                stream=fields.get(b"s", b"stdout").decode(),
                line=fields.get(b"l", b"").decode(errors="replace"),
            )
            for entry_id, fields in rows
        ]
