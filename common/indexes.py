"""The listing indexes of a group's jobs: what goes in them, and how a cursor reads them.

Every job is a member of a few sorted sets in its group's slot,
``gm:{wg:G}:ix:<dim>:<value>``: one for its status (moved by every transition
script); one each for its kind, script path, tag, schedule and root flow job
(written at enqueue, never changed); and one for its creator
(``by:<user>:<part>``) and one for its ``permissioned_as``
(``as:<identity>:<part>``), partitioned by ``live`` (queued or running) or the
final status, so a user lists his failures exactly from his own sets. Only a
completion moves a job between partitions, and every completing caller knows
the job's identity; starts, retries and releases (the hot path) do not touch
them. The member is ``<created_at as 13 digits>:<id>`` with
score 0, so the sets are read with ZRANGE BYLEX: newest first, ties broken by
id, and a cursor is simply the last member seen (exact, whatever the number of
jobs created in the same millisecond).

The record keeps its entries in the field ``ix`` (member, then the fixed
entries, tab-separated). A completing script copies that field, plus its final
status and identity entries, into ``gm:{wg:G}:ixtrim`` scored by
``completed_at``; the
retention trim reads it there, so it removes a job's index entries without
needing the record (which expires on its own).

Pure functions only; the store and the queries do the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from common.models import TERMINAL_STATUSES, Job, Status

DIMENSIONS = ("status", "kind", "path", "by", "as", "tag", "schedule", "root")
# The record field and job attribute behind each fixed dimension.
FIXED: Mapping[str, str] = {
    "kind": "kind", "path": "script_path", "tag": "tag", "schedule": "schedule_path",
    "root": "root_job",
}
LIVE = "live"
# The partitions of the identity sets: live jobs, then one per final status.
PARTS = (LIVE, Status.SUCCESS.value, Status.FAILURE.value, Status.CANCELED.value)
SEPARATOR = "\t"
TS_DIGITS = 13


def member(created_at: int, job_id: str) -> str:
    """The index member of a job: sorts by creation time, then id."""
    return f"{created_at:0{TS_DIGITS}d}:{job_id}"


def split_member(entry: str) -> tuple[int, str]:
    """(created_at, id) of an index member."""
    ts, _, job_id = entry.partition(":")
    return int(ts), job_id


def entry(dim: str, value: str) -> str:
    """``<dim>:<value>``, the part of an index key after ``ix:``."""
    if dim not in DIMENSIONS:
        raise ValueError(f"unknown index dimension {dim!r}")
    return f"{dim}:{value}"


def status_entry(status: Status | str) -> str:
    return entry("status", str(status))


def part_of(status: Status) -> str:
    """The identity-set partition of a status: ``live`` until the job is over."""
    return status.value if status in TERMINAL_STATUSES else LIVE


def identity_entries(created_by: str, permissioned_as: str, part: str) -> list[str]:
    """The creator's and the run-as identity's sets for one partition."""
    return [entry("by", f"{created_by}:{part}"), entry("as", f"{permissioned_as}:{part}")]


def entries_for(job: Job, status: Status) -> list[str]:
    """Every set a new record with ``status`` joins: status, fixed entries, identities."""
    return [status_entry(status), *fixed_entries(job),
            *identity_entries(job.created_by, job.permissioned_as, part_of(status))]


def fixed_entries(job: Job) -> list[str]:
    """The entries a job keeps for its whole life (everything but its status)."""
    out = []
    for dim, attr in FIXED.items():
        value = getattr(job, attr)
        if value:
            out.append(entry(dim, str(value)))
    return out


def record_field(job: Job) -> str:
    """The value of the record's ``ix`` field: member, then the fixed entries."""
    return SEPARATOR.join([member(job.created_at, job.id), *fixed_entries(job)])


def trim_line(job: Job, status: Status | None = None) -> str:
    """The ``ixtrim`` member of a job completed with ``status`` (default: its own), as the
    completing scripts write it."""
    return completed_line(record_field(job), status or job.status, job.created_by,
                          job.permissioned_as)


def completed_line(ix: str, final: Status | str, created_by: str, permissioned_as: str) -> str:
    """The ``ixtrim`` member built from a record's stored ``ix`` field and its final status:
    the same string the completing scripts write, so a job deleted early (count-based
    retention) can have its line and entries removed exactly."""
    part = part_of(Status(final))
    return SEPARATOR.join([ix, status_entry(final),
                           *identity_entries(created_by, permissioned_as, part)])


@dataclass(frozen=True)
class TrimEntry:
    """One completed job's line in ``ixtrim``: its member and every entry it is in."""

    member: str
    entries: tuple[str, ...]


def parse_trim(raw: str) -> TrimEntry:
    """Decode an ``ixtrim`` member (the record's ``ix`` + the final status and identity entries)."""
    first, *rest = raw.split(SEPARATOR)
    return TrimEntry(first, tuple(rest))


# -- lexicographic ranges ------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The part of an index a page reads: below ``cursor``, inside a creation-time range."""

    cursor: str | None = None
    created_after: int | None = None   # inclusive, epoch ms
    created_before: int | None = None  # exclusive, epoch ms

    def max_bound(self) -> str:
        """The ZRANGE BYLEX REV upper bound (exclusive where it must be)."""
        bounds = []
        if self.cursor is not None:
            bounds.append(self.cursor)
        if self.created_before is not None:
            # A member "<ts>:<id>" sorts after its bare "<ts>", so this excludes ts == before.
            bounds.append(f"{self.created_before:0{TS_DIGITS}d}")
        return f"({min(bounds)}" if bounds else "+"

    def min_bound(self) -> str:
        if self.created_after is None:
            return "-"
        return f"[{max(self.created_after, 0):0{TS_DIGITS}d}"

    def after(self, last: str) -> Window:
        return Window(last, self.created_after, self.created_before)


def merge_newest(batches: Iterable[list[str]], limit: int) -> list[str]:
    """The ``limit`` newest distinct members of several newest-first batches."""
    return sorted(set().union(*batches), reverse=True)[:limit]
