"""The whole Redis key layout, in one place. No other module formats a key.

Every key one atomic script touches carries the same hash tag, so the scripts
run unchanged on a Redis Cluster: the group's keys share ``{wg:<group>}``,
the script store's share ``{scripts}``.

================================  ======  =========================================  =======================
key                               type    holds                                      TTL / writer
================================  ======  =========================================  =======================
``gm:{wg:G}:scheduled``           ZSET    queued ids, score = scheduled_for (ms)     enqueue / promote
``gm:{wg:G}:ready``               LIST    due ids, oldest first                      enqueue, promote / worker
``gm:{wg:G}:running:<worker>``    LIST    ids that worker holds (BLMOVE target)      worker / complete,recover
``gm:{wg:G}:job:<id>``            HASH    the job record                             retention once completed
``gm:{wg:G}:logs:<id>``           STREAM  log lines (fields ``a t s l``)             retention once completed
``gm:{wg:G}:done:<id>``           LIST    one element at completion, for waiters     DONE_TTL_S
``gm:{wg:G}:completed``           ZSET    completed ids, score = completed_at        trimmed by the scheduler
``gm:{wg:G}:events``              STREAM  lifecycle events                           capped at EVENTS_MAXLEN
``gm:{wg:G}:wake``                LIST    nudges the group's promoter                capped at 1 element
``gm:{wg:G}:ix:<dim>:<value>``    ZSET    listing index, members ``<ms>:<id>``       transitions / trim
                                          (score 0, read BYLEX; common/indexes.py)
``gm:{wg:G}:ixtrim``              ZSET    completed jobs' index entries by           completions / trim
                                          completed_at: what the trim removes
``gm:inbox``                      LIST    raw JSON specs from any client             scheduler admits
``gm:inbox:processing:{gm:inbox}:<sched>``
                                  LIST    specs one scheduler is admitting (tagged   recovered if it dies
                                          with the inbox's name: its slot)
``gm:inbox:batch:{gm:inbox}:<id>``
                                  HASH    a batch of specs from ``enqueue_many``     client / scheduler admits
                                          (``specs``: msgpack; ``started``: taken
                                          once); ``gm:inbox`` holds ``@batch:<id>``
``gm:jobloc:<id>``                STRING  the group of job ``<id>``                  deleted by retention trim
``gm:groups``                     SET     every worker group ever used               enqueue, worker
``gm:workers``                    ZSET    worker id -> last heartbeat ms             worker / scheduler
``gm:worker:<worker>``            HASH    group, host, pid, started_at, version,…    worker / scheduler
``gm:schedulers``                 ZSET    scheduler id -> last heartbeat ms          scheduler
``gm:routing``                    HASH    tag -> worker group                        operators
``gm:settings``                   HASH    instance settings (``retention_s``, …)     ``gristmill settings``
``gm:{scripts}:script:<hash>``    HASH    one immutable script version               script deploy
``gm:{scripts}:paths``            HASH    path -> latest hash                        script deploy
``gm:{scripts}:history:<path>``   LIST    hashes of a path, oldest first             script deploy
``gm:{scripts}:locked``           HASH    path -> latest runnable (locked) hash      deploy, dependencies job
``gm:{scripts}:lockcache:<sha>``  STRING  a resolved lock by requirement set         dependencies / previews
``gm:{auth}:user:<name>``          HASH    name, password (argon2), role, …           user create
``gm:{auth}:users``                SET     user names                                 user create/delete
``gm:{auth}:group:<name>``         HASH    name, created_at, created_by               group create
``gm:{auth}:groups``               SET     group names                                group create/delete
``gm:{auth}:members:<group>``      SET     user names in the group                    group add/remove
``gm:{auth}:memberships:<user>``   SET     groups of the user (reverse index)         group add/remove
``gm:{auth}:token:<sha256>``       HASH    owner, kind (api|job), label, expiry, …    token create / worker
``gm:{auth}:tokens:<user>``        SET     sha256 of the user's API tokens            token create/revoke
``gm:{auth}:jobtoken:<job id>``    STRING  sha256 of a stored job token               token mint (no claim)
``gm:{auth}:jobtoken-key``         STRING  HMAC key of signed job tokens (32 bytes)   first mint (SET NX)
``gm:{items}:variable:<path>``     HASH    value (AES-GCM when secret), is_secret, …  variables API
``gm:{items}:resource:<path>``     HASH    resource type, value (JSON), …             resources API
``gm:{items}:index:<kind>``        SET     paths of variables / resources             variables/resources API
``gm:{items}:acl:<path>``          HASH    identity -> read|run|write (extra grants)  owners
``gm:{items}:folder:<name>``       HASH    owner, readers, writers (JSON lists)       folder create
``gm:{items}:granted:<identity>``  SET     p:<path>, f:<folder> naming the identity   grants, folders
``gm:{wg:G}:redact:<id>``          SET     ciphertexts of secrets the job read        API / worker
``gm:{schedules}:schedule:<path>`` HASH    one cron schedule                          schedule create/...
``gm:{schedules}:paths``           SET     every schedule path                        schedule create/delete
``gm:{schedules}:due``             ZSET    enabled path -> its queued fire (ms)       scheduler
``gm:{schedules}:runs:<path>``     LIST    job ids of its fires, newest first (100)   scheduler
``gm:{flows}:flow:<hash>``         HASH    one immutable flow version (path, value)   flow deploy
``gm:{flows}:paths``               HASH    path -> latest flow hash                   flow deploy
``gm:{flows}:history:<path>``      LIST    flow hashes of a path, oldest first        flow deploy
``gm:{wg:G}:flow:<id>``            HASH    def, state, version, f:<addr> frames       flow create / advance
``gm:{wg:G}:flowevents:<id>``      LIST    the flow's events not yet applied (JSON)   producers / advance
``gm:{wg:G}:flowoutbox:<id>``      LIST    actions committed, not yet carried out     advance / dispatch
``gm:{wg:G}:flowq``                LIST    ids of flows with events (one per event)   producers / advancer
``gm:{wg:G}:flowq:processing:<a>`` LIST    flow ids advancer ``<a>`` is working on    advancer
``gm:{wg:G}:flowsrunning``         ZSET    running flow id -> last commit ms          advance / sweep
``gm:{wg:G}:flowtimers``           ZSET    ``<flow id> <key>`` -> due ms (suspend)    dispatch / timer sweep
``gm:{wg:G}:flownotify``           LIST    step outcomes to hand to their flows       step completion / fwd
``gm:{wg:G}:flownonce:<id>:<n>``   STRING  a resume URL's nonce, used (TTL: expiry)   resume endpoint
``gm:{wg:G}:flowearly:<id>``       LIST    wakes run_wait_result: early return, end    flow launcher
================================  ======  =========================================  =======================
"""

from __future__ import annotations

from dataclasses import dataclass

DONE_TTL_S = 3600
# A worker presumed dead is fenced this long (gm:{wg:G}:gone:<w>): longer than any blocking
# claim it may have left parked in Redis (at most a minute).
GONE_TTL_S = 600
EVENTS_MAXLEN = 10_000
LOGS_MAXLEN = 100_000
# An inbox element that names a stored batch rather than holding a spec (a spec is JSON).
BATCH_REF_PREFIX = b"@batch:"
# An inbox element that only ends a scheduler's blocking wait (a stopping scheduler's).
INBOX_WAKE = b"@wake"


@dataclass(frozen=True)
class GroupKeys:
    """The keys of one worker group; all share the group's hash tag."""

    prefix: str

    @property
    def scheduled(self) -> str:
        return f"{self.prefix}:scheduled"

    @property
    def ready(self) -> str:
        return f"{self.prefix}:ready"

    @property
    def completed(self) -> str:
        return f"{self.prefix}:completed"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def wake(self) -> str:
        return f"{self.prefix}:wake"

    def running(self, worker_id: str) -> str:
        return f"{self.prefix}:running:{worker_id}"

    def landing(self, worker_id: str) -> str:
        """Ids an idle worker's BLMOVE took off ready, until its claim_start starts them."""
        return f"{self.prefix}:landing:{worker_id}"

    def gone(self, worker_id: str) -> str:
        """Set while a worker is presumed dead: its claims start nothing."""
        return f"{self.prefix}:gone:{worker_id}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def logs(self, job_id: str) -> str:
        return f"{self.prefix}:logs:{job_id}"

    def done(self, job_id: str) -> str:
        return f"{self.prefix}:done:{job_id}"

    def attempts(self, job_id: str) -> str:
        return f"{self.prefix}:attempts:{job_id}"

    def control(self, worker_id: str) -> str:
        return f"{self.prefix}:control:{worker_id}"

    def redact(self, job_id: str) -> str:
        return f"{self.prefix}:redact:{job_id}"

    # -- flows whose flow job is in this group (see docs/ARCHITECTURE.md, "Flows") ----------

    def flow(self, flow_id: str) -> str:
        return f"{self.prefix}:flow:{flow_id}"

    def flow_events(self, flow_id: str) -> str:
        return f"{self.prefix}:flowevents:{flow_id}"

    def flow_outbox(self, flow_id: str) -> str:
        return f"{self.prefix}:flowoutbox:{flow_id}"

    @property
    def flow_queue(self) -> str:
        return f"{self.prefix}:flowq"

    def flow_processing(self, advancer_id: str) -> str:
        return f"{self.prefix}:flowq:processing:{advancer_id}"

    @property
    def flows_running(self) -> str:
        return f"{self.prefix}:flowsrunning"

    @property
    def flow_timers(self) -> str:
        return f"{self.prefix}:flowtimers"

    @property
    def flow_notify(self) -> str:
        return f"{self.prefix}:flownotify"

    def flow_nonce(self, flow_id: str, nonce: str) -> str:
        return f"{self.prefix}:flownonce:{flow_id}:{nonce}"

    def flow_early(self, flow_id: str) -> str:
        return f"{self.prefix}:flowearly:{flow_id}"

    def index(self, entry: str) -> str:
        """A listing index; ``entry`` is ``<dim>:<value>`` (see common/indexes.py)."""
        return f"{self.prefix}:ix:{entry}"

    @property
    def ixtrim(self) -> str:
        return f"{self.prefix}:ixtrim"


@dataclass(frozen=True)
class Keys:
    """Builds every key of one namespace (setting ``GRISTMILL_NAMESPACE``)."""

    namespace: str = "gm"

    def group(self, group: str) -> GroupKeys:
        return GroupKeys(f"{self.namespace}:{{wg:{group}}}")

    @property
    def inbox(self) -> str:
        return f"{self.namespace}:inbox"

    def inbox_processing(self, scheduler_id: str) -> str:
        # Tagged with the inbox's whole name, so both hash to the same slot (the inbox's
        # name is the public contract and has no tag): BLMOVE and LMOVE between them
        # run on one shard of a cluster.
        return f"{self.namespace}:inbox:processing:{{{self.inbox}}}:{scheduler_id}"

    def inbox_batch(self, batch_id: str) -> str:
        # In the inbox's slot too: the producer writes it and pushes its reference in
        # one pipeline to one shard, and the admitter deletes it with the reference.
        return f"{self.namespace}:inbox:batch:{{{self.inbox}}}:{batch_id}"

    @staticmethod
    def batch_ref(batch_id: str) -> bytes:
        """The ``gm:inbox`` element that stands for the batch stored at :meth:`inbox_batch`."""
        return BATCH_REF_PREFIX + batch_id.encode()

    @staticmethod
    def batch_of(element: bytes) -> str | None:
        """The batch id an inbox element refers to; None for an ordinary spec (JSON)."""
        if not element.startswith(BATCH_REF_PREFIX):
            return None
        return element[len(BATCH_REF_PREFIX):].decode(errors="replace")

    def inbox_processing_before_cluster(self, scheduler_id: str) -> str:
        """The name a processing list had before it was tagged (left by a scheduler killed
        before an upgrade; on a single server only: it never worked on a cluster)."""
        return f"{self.namespace}:inbox:processing:{scheduler_id}"

    def jobloc(self, job_id: str) -> str:
        return f"{self.namespace}:jobloc:{job_id}"

    @property
    def groups(self) -> str:
        return f"{self.namespace}:groups"

    @property
    def workers(self) -> str:
        return f"{self.namespace}:workers"

    def worker(self, worker_id: str) -> str:
        return f"{self.namespace}:worker:{worker_id}"

    @property
    def schedulers(self) -> str:
        return f"{self.namespace}:schedulers"

    @property
    def routing(self) -> str:
        return f"{self.namespace}:routing"

    @property
    def settings(self) -> str:
        return f"{self.namespace}:settings"

    def script(self, script_hash: str) -> str:
        return f"{self.namespace}:{{scripts}}:script:{script_hash}"

    @property
    def script_paths(self) -> str:
        return f"{self.namespace}:{{scripts}}:paths"

    def script_history(self, path: str) -> str:
        return f"{self.namespace}:{{scripts}}:history:{path}"

    @property
    def script_locked(self) -> str:
        """path -> the latest version that may run (locked, or needing no lock)."""
        return f"{self.namespace}:{{scripts}}:locked"

    def lock_cache(self, digest: str) -> str:
        """A resolved lock, by the sha256 of its requirement set and index options (TTL)."""
        return f"{self.namespace}:{{scripts}}:lockcache:{digest}"

    def flow_version(self, flow_hash: str) -> str:
        return f"{self.namespace}:{{flows}}:flow:{flow_hash}"

    @property
    def flow_paths(self) -> str:
        return f"{self.namespace}:{{flows}}:paths"

    def flow_history(self, path: str) -> str:
        return f"{self.namespace}:{{flows}}:history:{path}"

    # -- identity ({auth}) and items ({items}) ------------------------------------------------

    def user(self, name: str) -> str:
        return f"{self.namespace}:{{auth}}:user:{name}"

    @property
    def users(self) -> str:
        return f"{self.namespace}:{{auth}}:users"

    def user_group(self, name: str) -> str:
        return f"{self.namespace}:{{auth}}:group:{name}"

    @property
    def user_groups(self) -> str:
        return f"{self.namespace}:{{auth}}:groups"

    def members(self, group: str) -> str:
        return f"{self.namespace}:{{auth}}:members:{group}"

    def memberships(self, user: str) -> str:
        return f"{self.namespace}:{{auth}}:memberships:{user}"

    def token(self, digest: str) -> str:
        return f"{self.namespace}:{{auth}}:token:{digest}"

    def user_tokens(self, user: str) -> str:
        return f"{self.namespace}:{{auth}}:tokens:{user}"

    def job_token(self, job_id: str) -> str:
        return f"{self.namespace}:{{auth}}:jobtoken:{job_id}"

    @property
    def job_token_key(self) -> str:
        return f"{self.namespace}:{{auth}}:jobtoken-key"

    def variable(self, path: str) -> str:
        return f"{self.namespace}:{{items}}:variable:{path}"

    def resource(self, path: str) -> str:
        return f"{self.namespace}:{{items}}:resource:{path}"

    def item_index(self, kind: str) -> str:
        return f"{self.namespace}:{{items}}:index:{kind}"

    def acl(self, path: str) -> str:
        return f"{self.namespace}:{{items}}:acl:{path}"

    def folder(self, name: str) -> str:
        return f"{self.namespace}:{{items}}:folder:{name}"

    def granted(self, identity: str) -> str:
        return f"{self.namespace}:{{items}}:granted:{identity}"

    def schedule(self, path: str) -> str:
        return f"{self.namespace}:{{schedules}}:schedule:{path}"

    @property
    def schedule_paths(self) -> str:
        return f"{self.namespace}:{{schedules}}:paths"

    @property
    def schedules_due(self) -> str:
        return f"{self.namespace}:{{schedules}}:due"

    def schedule_runs(self, path: str) -> str:
        return f"{self.namespace}:{{schedules}}:runs:{path}"
