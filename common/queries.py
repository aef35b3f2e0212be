"""Listing jobs from the indexes the transition scripts keep (common/indexes.py).

A page reads one *driver*: the smallest index that the filters name and the
caller may read, or the union of the caller's own indexes (``by:<user>`` and
``as:<identity>`` for each identity he acts as); for everyone allowed to see
all jobs and no indexed filter, the union of the status indexes. Filters the
driver does not already satisfy are checked on the records it yields, in
batches, up to a scan budget: a page may then come back short, with a cursor to
go on from where the scan stopped. A user never reads an index entry or a record
of a job he may not see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields

from common import indexes
from common.connection import redis_errors
from common.errors import BadRecord
from common.indexes import Window
from common.models import Job, Kind, Status
from common.store import Store

SCAN_BUDGET = 5000
MIN_BATCH = 100
MAX_BATCH = 1600
# What a listing row shows (and the filters check); the full record is one GET away.
SUMMARY_FIELDS = (
    "id", "kind", "status", "tag", "group", "language", "scheduled_for", "created_at",
    "created_by", "permissioned_as", "script_path", "script_hash", "started_at", "completed_at",
    "duration_ms", "worker", "attempt", "parent_job", "root_job", "schedule_path", "canceled_by",
    # Only a rejected inbox spec has one (redacted, at most 64 KiB): a listing shows it as such.
    "raw_spec",
)


@dataclass(frozen=True)
class Driver:
    """Sets whose union a page reads, and the filters (record fields) every member satisfies."""

    entries: list[str]
    settles: frozenset[str]


@dataclass(frozen=True)
class JobFilter:
    """What a listing asks for; None means any. Time bounds are epoch ms on created_at."""

    status: Status | None = None
    kind: Kind | None = None
    path: str | None = None
    created_by: str | None = None
    permissioned_as: str | None = None
    tag: str | None = None
    schedule: str | None = None
    root: str | None = None
    group: str | None = None
    created_after: int | None = None
    created_before: int | None = None

    def wanted(self) -> dict[str, str]:
        """Record field -> value, for every filter that a record is checked against."""
        pairs = (("status", self.status), ("kind", self.kind), ("script_path", self.path),
                 ("created_by", self.created_by), ("permissioned_as", self.permissioned_as),
                 ("tag", self.tag), ("schedule_path", self.schedule), ("root_job", self.root))
        return {attr: str(value) for attr, value in pairs if value is not None}

    def parts(self) -> tuple[tuple[str, ...], frozenset[str]]:
        """The identity-set partitions to read, and whether they settle the status filter."""
        if self.status is None:
            return indexes.PARTS, frozenset()
        part = indexes.part_of(self.status)
        return (part,), frozenset({"status"}) if part != indexes.LIVE else frozenset()

    def single_options(self) -> list[Driver]:
        """One driver per filter that has a set of its own (for who may read every set)."""
        out = []
        for dim, attr, value in (
            ("status", "status", self.status), ("kind", "kind", self.kind),
            ("path", "script_path", self.path), ("tag", "tag", self.tag),
            ("schedule", "schedule_path", self.schedule), ("root", "root_job", self.root),
        ):
            if value is not None:
                out.append(Driver([indexes.entry(dim, str(value))], frozenset({attr})))
        return out

    def identity_option(self, dim: str, identity: str) -> Driver:
        """The partitions of one identity set (``by`` or ``as``)."""
        parts, settled = self.parts()
        attr = "created_by" if dim == "by" else "permissioned_as"
        return Driver([indexes.entry(dim, f"{identity}:{p}") for p in parts],
                      settled | {attr})

    def describe(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Viewer:
    """Whose jobs a caller may see: ``None`` identities means every job (an admin)."""

    user: str | None = None                       # u/<name>: jobs he created
    identities: frozenset[str] | None = None      # jobs run as any of these

    @property
    def sees_all(self) -> bool:
        return self.identities is None

    def own_entries(self, parts: Sequence[str] = indexes.PARTS) -> list[str]:
        """The sets that hold exactly the jobs this viewer may see (with overlaps)."""
        out = [indexes.entry("by", f"{self.user}:{p}") for p in parts] if self.user else []
        return out + [indexes.entry("as", f"{i}:{p}") for i in sorted(self.identities or ())
                      for p in parts]

    def may_see(self, record: dict[str, str]) -> bool:
        return (self.identities is None or record.get("created_by") == self.user
                or record.get("permissioned_as") in self.identities)


EVERYONE = Viewer()


@dataclass
class Page:
    """One page, newest first; ``next_cursor`` is None when nothing older matches.

    ``damaged`` holds the rows this version cannot read (:class:`BadRecord`, naming each job):
    they are left out of ``jobs`` rather than failing the whole page."""

    jobs: list[Job]
    next_cursor: str | None
    scanned: int = 0
    driver: list[str] = field(default_factory=list)
    damaged: list[BadRecord] = field(default_factory=list)


# What a caller of :func:`iter_jobs` is told of each row left out (the row's BadRecord).
OnDamaged = Callable[[BadRecord], None]


def _groups(store: Store, flt: JobFilter) -> list[str]:
    if flt.group is not None:
        return [flt.group]
    return sorted(g.decode() for g in store.client.smembers(store.keys.groups))


def _options(flt: JobFilter, viewer: Viewer) -> list[Driver]:
    """Every driver this viewer may read for this filter."""
    options = []
    if viewer.sees_all:
        options += flt.single_options()
    if flt.created_by is not None and (viewer.sees_all or flt.created_by == viewer.user):
        options.append(flt.identity_option("by", flt.created_by))
    if flt.permissioned_as is not None and (viewer.sees_all
                                            or flt.permissioned_as in (viewer.identities or ())):
        options.append(flt.identity_option("as", flt.permissioned_as))
    if not viewer.sees_all:
        parts, settled = flt.parts()
        options.append(Driver(viewer.own_entries(parts), settled))
    elif not options:
        options.append(Driver([indexes.status_entry(s) for s in Status], frozenset()))
    return options


def _choose_driver(store: Store, groups: Sequence[str], flt: JobFilter, viewer: Viewer
                   ) -> Driver:
    """The option whose sets are the smallest (sizes by ZCARD, in one round trip)."""
    options = _options(flt, viewer)
    if len(options) == 1:
        return options[0]
    pipe = store.client.pipeline(transaction=False)
    for option in options:
        for entry in option.entries:
            for group in groups:
                pipe.zcard(store.keys.group(group).index(entry))
    sizes = iter(pipe.execute())
    totals = [sum(next(sizes) for _ in range(len(o.entries) * len(groups))) for o in options]
    return options[totals.index(min(totals))]


@redis_errors
def list_page(
    store: Store, flt: JobFilter = JobFilter(), *, viewer: Viewer = EVERYONE,
    cursor: str | None = None, limit: int = 50, scan_budget: int = SCAN_BUDGET,
) -> Page:
    """One page of the jobs ``viewer`` may see that match ``flt``, newest first.

    The jobs carry the summary fields only (``SUMMARY_FIELDS``)."""
    groups = _groups(store, flt)
    if not groups:
        return Page([], None)
    chosen_driver = _choose_driver(store, groups, flt, viewer)
    driver = chosen_driver.entries
    checks = [(attr, value) for attr, value in flt.wanted().items()
              if attr not in chosen_driver.settles]
    post_filter = bool(checks)
    window = Window(cursor, flt.created_after, flt.created_before)
    batch = max(limit + 1, MIN_BATCH) if post_filter else limit + 1
    check_fields = ("id", "created_by", "permissioned_as", *(attr for attr, _ in checks))
    jobs: list[Job] = []
    damaged: list[BadRecord] = []
    scanned = 0
    while True:
        members, where = _read_batch(store, groups, driver, window, batch)
        if not members:
            return Page(jobs, None, scanned, driver, damaged)
        # Sparse filters read only the fields they check, then the rows that pass.
        records = _records(store, members, where, check_fields if post_filter else SUMMARY_FIELDS)
        chosen: list[str] = []
        for i, member in enumerate(members, start=1):  # noqa: B007 (i is read after the loop)
            scanned += 1
            record = records.get(member)
            if (record is None or not viewer.may_see(record)
                    or any(record.get(attr) != value for attr, value in checks)):
                continue
            chosen.append(member)
            if len(jobs) + len(chosen) == limit:
                break
        rows = _records(store, chosen, where, SUMMARY_FIELDS) if post_filter else records
        for member in chosen:
            if member in rows:
                try:
                    jobs.append(_summary(member, rows[member]))
                except BadRecord as exc:
                    damaged.append(exc)
        if len(jobs) >= limit:
            more = i < len(members) or len(members) == batch
            return Page(jobs, chosen[-1] if more else None, scanned, driver, damaged)
        if i == len(members) and len(members) < batch:
            return Page(jobs, None, scanned, driver, damaged)
        window = window.after(members[i - 1])
        if post_filter:  # a sparse filter: read further ahead each round
            batch = min(batch * 2, MAX_BATCH)
        if scanned >= scan_budget:
            # Partial page: the caller goes on from where the scan stopped.
            return Page(jobs, members[i - 1], scanned, driver, damaged)


def _summary(member: str, row: dict[str, str]) -> Job:
    """A listing row as a Job; BadRecord names the job of the index entry if it cannot be read."""
    try:
        return Job.from_redis({k.encode(): v.encode() for k, v in row.items()})
    except BadRecord as exc:
        raise BadRecord(indexes.split_member(member)[1], exc.problem) from None


def _read_batch(store: Store, groups: Sequence[str], driver: Sequence[str], window: Window,
                batch: int) -> tuple[list[str], dict[str, str]]:
    """The ``batch`` newest members inside ``window`` across the driver's sets, and their groups."""
    pipe = store.client.pipeline(transaction=False)
    pairs = [(group, entry) for group in groups for entry in driver]
    for group, entry in pairs:
        pipe.zrange(store.keys.group(group).index(entry), window.max_bound(), window.min_bound(),
                    desc=True, bylex=True, offset=0, num=batch)
    where: dict[str, str] = {}
    answers = pipe.execute()
    for (group, _), answer in zip(pairs, answers, strict=True):
        for raw in answer:
            where[raw.decode()] = group
    return indexes.merge_newest([list(where)], batch), where


def _records(store: Store, members: Sequence[str], where: dict[str, str],
             wanted: Sequence[str]) -> dict[str, dict[str, str]]:
    """Some fields (the first is ``id``) of each member's record; never args, result or logs."""
    if not members:
        return {}
    pipe = store.client.pipeline(transaction=False)
    for member in members:
        pipe.hmget(store.keys.group(where[member]).job(indexes.split_member(member)[1]), wanted)
    out = {}
    for member, values in zip(members, pipe.execute(), strict=True):
        if values[0] is not None:  # a record that just expired is skipped; the trim removes it
            out[member] = {k: v.decode() for k, v in zip(wanted, values, strict=True)
                           if v is not None}
    return out


def iter_jobs(store: Store, flt: JobFilter = JobFilter(), *, viewer: Viewer = EVERYONE,
              page_size: int = 500, on_damaged: OnDamaged | None = None) -> Iterator[Job]:
    """Every matching job, newest first, page by page.

    Records that cannot be read are left out (a page's ``damaged``) without ending the
    iteration; ``on_damaged`` is called with each (its ``job_id`` names the job) as its page
    is read, before that page's jobs are yielded."""
    cursor: str | None = None
    while True:
        page = list_page(store, flt, viewer=viewer, cursor=cursor, limit=page_size)
        if on_damaged is not None:
            for damaged in page.damaged:
                on_damaged(damaged)
        yield from page.jobs
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


@redis_errors
def counts(store: Store, flt: JobFilter = JobFilter(), viewer: Viewer = EVERYONE
           ) -> dict[str, dict[str, int]]:
    """Jobs per status and per kind, from ZLEXCOUNT alone (no record is read).

    Everyone else than an admin gets his counts per partition (``live`` =
    queued + running, then each final status) of the jobs run as him or his
    groups; jobs he created as another identity are not counted.
    """
    groups = _groups(store, flt)
    window = Window(None, flt.created_after, flt.created_before)
    if viewer.sees_all:
        names = [("status", s.value, [indexes.status_entry(s)]) for s in Status]
        names += [("kind", k.value, [indexes.entry("kind", k.value)]) for k in Kind]
    else:
        names = [("status", part, [indexes.entry("as", f"{i}:{part}")
                                   for i in sorted(viewer.identities or ())])
                 for part in indexes.PARTS]
    pipe = store.client.pipeline(transaction=False)
    for _, _, entries in names:
        for entry in entries:
            for group in groups:
                pipe.zlexcount(store.keys.group(group).index(entry), window.min_bound(),
                               window.max_bound())
    answers = iter(pipe.execute())
    out: dict[str, dict[str, int]] = {"status": {}} if not viewer.sees_all else {
        "status": {}, "kind": {}}
    for dim, value, entries in names:
        out[dim][value] = sum(next(answers) for _ in range(len(entries) * len(groups)))
    return out


def list_jobs(store: Store, *, status: Status | None = None, kind: Kind | None = None,
              group: str | None = None, limit: int = 50,
              on_damaged: OnDamaged | None = None) -> list[Job]:
    """The newest ``limit`` jobs matching the filters (for every job's viewer); records that
    cannot be read are left out, and passed to ``on_damaged`` (see :func:`iter_jobs`)."""
    flt = JobFilter(status=status, kind=kind, group=group)
    out: list[Job] = []
    for job in iter_jobs(store, flt, page_size=min(limit, 1000), on_damaged=on_damaged):
        out.append(job)
        if len(out) == limit:
            break
    return out
