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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields

from common import indexes
from common.connection import redis_errors
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
)


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

    def entries(self) -> dict[str, str]:
        """The filters that have an index: dimension entry -> record field it checks."""
        out = {}
        for dim, attr, value in (
            ("status", "status", self.status), ("kind", "kind", self.kind),
            ("path", "script_path", self.path), ("by", "created_by", self.created_by),
            ("as", "permissioned_as", self.permissioned_as), ("tag", "tag", self.tag),
            ("schedule", "schedule_path", self.schedule), ("root", "root_job", self.root),
        ):
            if value is not None:
                out[indexes.entry(dim, str(value))] = attr
        return out

    def checks(self, skip: str | None = None) -> list[tuple[str, str]]:
        """(record field, wanted value) for every indexed filter but the driver's own ``skip``."""
        return [(attr, entry.partition(":")[2]) for entry, attr in self.entries().items()
                if entry != skip]

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

    def own_entries(self) -> list[str]:
        """The indexes that hold exactly the jobs this viewer may see (with overlaps)."""
        out = [indexes.entry("by", self.user)] if self.user else []
        return out + [indexes.entry("as", i) for i in sorted(self.identities or ())]

    def may_see(self, record: dict[str, str]) -> bool:
        return (self.identities is None or record.get("created_by") == self.user
                or record.get("permissioned_as") in self.identities)


EVERYONE = Viewer()


@dataclass
class Page:
    """One page, newest first; ``next_cursor`` is None when nothing older matches."""

    jobs: list[Job]
    next_cursor: str | None
    scanned: int = 0
    driver: list[str] = field(default_factory=list)


def _groups(store: Store, flt: JobFilter) -> list[str]:
    if flt.group is not None:
        return [flt.group]
    return sorted(g.decode() for g in store.client.smembers(store.keys.groups))


def _choose_driver(store: Store, groups: Sequence[str], flt: JobFilter, viewer: Viewer
                   ) -> tuple[list[str], str | None]:
    """(index entries to union, the filter entry the driver satisfies by itself)."""
    wanted = flt.entries()
    own = viewer.own_entries()
    candidates = list(wanted) if viewer.sees_all else [e for e in wanted if e in own]
    if candidates:
        pipe = store.client.pipeline(transaction=False)
        for entry in candidates:
            for group in groups:
                pipe.zcard(store.keys.group(group).index(entry))
        sizes = pipe.execute()
        n = len(groups)
        totals = [sum(sizes[i * n:(i + 1) * n]) for i in range(len(candidates))]
        best = candidates[totals.index(min(totals))]
        return [best], best
    if viewer.sees_all:
        return [indexes.status_entry(s) for s in Status], None
    return own, None


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
    driver, satisfied = _choose_driver(store, groups, flt, viewer)
    post_filter = len(flt.entries()) > (1 if satisfied else 0) or not viewer.sees_all
    window = Window(cursor, flt.created_after, flt.created_before)
    batch = max(limit + 1, MIN_BATCH) if post_filter else limit + 1
    checks = flt.checks(satisfied)
    check_fields = ("id", "created_by", "permissioned_as", *(attr for attr, _ in checks))
    jobs: list[Job] = []
    scanned = 0
    while True:
        members, where = _read_batch(store, groups, driver, window, batch)
        if not members:
            return Page(jobs, None, scanned, driver)
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
        jobs += [Job.from_redis({k.encode(): v.encode() for k, v in rows[m].items()})
                 for m in chosen if m in rows]
        if len(jobs) >= limit:
            more = i < len(members) or len(members) == batch
            return Page(jobs, chosen[-1] if more else None, scanned, driver)
        if i == len(members) and len(members) < batch:
            return Page(jobs, None, scanned, driver)
        window = window.after(members[i - 1])
        if post_filter:  # a sparse filter: read further ahead each round
            batch = min(batch * 2, MAX_BATCH)
        if scanned >= scan_budget:
            # Partial page: the caller goes on from where the scan stopped.
            return Page(jobs, members[i - 1], scanned, driver)


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
              page_size: int = 500) -> Iterator[Job]:
    """Every matching job, newest first, page by page."""
    cursor: str | None = None
    while True:
        page = list_page(store, flt, viewer=viewer, cursor=cursor, limit=page_size)
        yield from page.jobs
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


@redis_errors
def counts(store: Store, flt: JobFilter = JobFilter()) -> dict[str, dict[str, int]]:
    """Jobs per status and per kind (for callers who may see every job), from ZLEXCOUNT alone."""
    groups = _groups(store, flt)
    window = Window(None, flt.created_after, flt.created_before)
    upper = window.max_bound()
    names = [("status", s.value) for s in Status] + [("kind", k.value) for k in Kind]
    pipe = store.client.pipeline(transaction=False)
    for dim, value in names:
        for group in groups:
            pipe.zlexcount(store.keys.group(group).index(indexes.entry(dim, value)),
                           window.min_bound(), upper)
    answers = pipe.execute()
    out: dict[str, dict[str, int]] = {"status": {}, "kind": {}}
    n = len(groups)
    for i, (dim, value) in enumerate(names):
        out[dim][value] = sum(answers[i * n:(i + 1) * n])
    return out


def list_jobs(store: Store, *, status: Status | None = None, kind: Kind | None = None,
              group: str | None = None, limit: int = 50) -> list[Job]:
    """The newest ``limit`` jobs matching the filters (for every job's viewer)."""
    flt = JobFilter(status=status, kind=kind, group=group)
    out: list[Job] = []
    for job in iter_jobs(store, flt, page_size=min(limit, 1000)):
        out.append(job)
        if len(out) == limit:
            break
    return out
