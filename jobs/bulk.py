"""Specs in bulk: checked once per *template*, then per job only an id and its args.

``enqueue_many`` sends thousands of specs that differ only in ``args`` (and
maybe ``id``). Everything else (what to run, tag, identity, limits) is the
spec's template: it is judged once per distinct template (by the caller's
``judge``, which is the full admission check), and each job is left with the
cheap part: a UUID, an args object that every store can hold. The scheduler
admits the prepared specs again in full (DESIGN.md §6): this is the early,
synchronous answer to the producer, not the only check.

Pure: data in, data out; the ids come from ``new_id`` so a table can test it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from common import codec
from common.errors import SpecError
from jobs import spec as specs
from jobs.spec import JobSpec

PER_JOB_FIELDS = ("id", "args")

RawSpec = JobSpec | dict[str, Any] | bytes | str
Judge = Callable[[dict[str, Any]], str | None]  # template -> None (runnable) or why not


@dataclass
class Prepared:
    """A batch of specs after the producer's checks, in their order."""

    ids: list[str] = field(default_factory=list)  # one per spec ("" for a rejected one, so far)
    specs: list[dict[str, Any]] = field(default_factory=list)  # the accepted ones, each with its id
    places: list[int] = field(default_factory=list)  # the batch index of each accepted spec
    generated: list[bool] = field(default_factory=list)  # per accepted spec: its id is new here
    rejected: dict[int, str] = field(default_factory=dict)  # batch index -> why
    duplicates: list[int] = field(default_factory=list)  # batch indexes of an id seen before


def as_data(raw: RawSpec) -> dict[str, Any]:
    """A spec as a JSON object (SpecError when it is not one)."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, JobSpec):
        return raw.model_dump(exclude_none=True)
    data = specs.decode_json(raw)
    if not isinstance(data, dict):
        raise SpecError(f"a job spec must be a JSON object, got {specs._json_type(data)}")
    return data


def template_key(template: dict[str, Any]) -> Hashable:
    """A hashable key equal for equal templates (a JSON text when a value is a container)."""
    items = tuple(sorted(template.items()))
    try:
        hash(items)
    except TypeError:
        return json.dumps(template, sort_keys=True, default=repr)
    return items


def job_id(value: object) -> str:
    """A producer's id in its canonical form (SpecError when it is not a UUID)."""
    if not isinstance(value, str):
        raise SpecError(f"id: {value!r} is not a UUID")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise SpecError(f"id: {value!r} is not a UUID") from None


def job_args(value: object) -> dict[str, Any]:
    """The args object, checked as the spec model would (SpecError saying what is wrong)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"args: must be a JSON object, got {specs._json_type(value)}")
    try:
        specs.check_json({"args": value})  # as in the whole spec: the same paths and depth
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    return value


def prepare(
    batch: Sequence[RawSpec], judge: Judge, *, new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    taken: Callable[[list[str]], set[str]] = lambda ids: set(),
    verdicts: dict[Hashable, str | None] | None = None,
) -> Prepared:
    """Check ``batch``: each template once (``judge``), each job's id and args.

    ``taken(ids)`` answers which of the producers' own ids exist already (one round
    trip for the batch); those, and an id repeated in the batch, are duplicates.
    ``verdicts`` keeps the templates' verdicts across the batches of one call.
    """
    out = Prepared(ids=[""] * len(batch))
    verdicts = {} if verdicts is None else verdicts
    chosen: list[int] = []
    for i, raw in enumerate(batch):
        try:
            data = as_data(raw)
            template = {k: v for k, v in data.items() if k not in PER_JOB_FIELDS}
            key = template_key(template)
            if key not in verdicts:
                verdicts[key] = judge(template)
            why = verdicts[key]
            if why is not None:
                raise SpecError(why)
            args = job_args(data.get("args"))
            given = data.get("id")
            ident = new_id() if given is None else job_id(given)
        except SpecError as exc:
            out.rejected[i] = str(exc)
            continue
        out.ids[i] = ident
        out.specs.append({**template, "id": ident, "args": args})
        out.places.append(i)
        out.generated.append(given is None)
        if given is not None:
            chosen.append(len(out.specs) - 1)
    if chosen:
        _drop_duplicates(out, chosen, taken)
    return out


def _drop_duplicates(out: Prepared, chosen: list[int], taken: Callable[[list[str]], set[str]]) -> None:
    """Remove the accepted specs whose producer id exists, or came earlier in the batch."""
    existing = taken([out.specs[k]["id"] for k in chosen])
    seen: set[str] = set()
    drop: set[int] = set()
    for k in chosen:
        ident = out.specs[k]["id"]
        if ident in existing or ident in seen:
            drop.add(k)
        seen.add(ident)
    if not drop:
        return
    out.duplicates = sorted(out.places[k] for k in drop)
    out.specs = [s for k, s in enumerate(out.specs) if k not in drop]
    out.places = [p for k, p in enumerate(out.places) if k not in drop]
    out.generated = [g for k, g in enumerate(out.generated) if k not in drop]


class StoredBatch(NamedTuple):
    """A batch as the scheduler reads it back."""

    specs: list[dict[str, Any]]
    generated: list[bool]  # per spec: its id was generated by the producer (never admitted)
    created_at: int | None  # the producer's clock when it pushed the batch (epoch ms)


def pack_batch(prepared: Prepared, created_at: int) -> bytes:
    """A prepared batch as stored for the scheduler: its specs, which ids are new, and
    when the producer pushed it (the jobs' ``created_at``, not their admission time)."""
    return codec.pack({"specs": prepared.specs, "generated": prepared.generated,
                       "created_at": created_at})


def unpack_batch(payload: bytes) -> StoredBatch | None:
    """The specs of a stored batch, which ids were generated for them and when it was
    pushed; None when the payload is not such a batch."""
    try:
        value = codec.unpack(payload)
    except (ValueError, TypeError):  # msgpack's errors are ValueErrors
        return None
    if not isinstance(value, dict):
        return None
    batch, generated = value.get("specs"), value.get("generated")
    if not isinstance(batch, list) or not all(isinstance(spec, dict) for spec in batch):
        return None
    if not isinstance(generated, list) or len(generated) != len(batch) or \
            not all(isinstance(flag, bool) for flag in generated):
        generated = [False] * len(batch)  # claimed one by one, as producers' own ids
    created_at = value.get("created_at")
    if not isinstance(created_at, int) or isinstance(created_at, bool) or created_at < 0:
        created_at = None  # admitted as created now
    return StoredBatch(batch, generated, created_at)
