"""enqueue_many's producer side, from tables: a template judged once, per job an id and args."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from common import codec
from jobs.bulk import as_data, job_args, pack_batch, prepare, template_key, unpack_batch
from jobs.spec import JobSpec

UUID = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"


def ids() -> Any:
    counter = itertools.count()
    return lambda: f"id-{next(counter)}"


def judge_all(templates: list[dict[str, Any]]) -> Any:
    def judge(template: dict[str, Any]) -> str | None:
        templates.append(template)
        return "path: no such script" if template.get("path") == "u/x/missing" else None
    return judge


def test_each_template_is_judged_once() -> None:
    """1,000 runs of one path and one of another: two verdicts asked for."""
    seen: list[dict[str, Any]] = []
    batch = [{"path": "u/a/s", "args": {"n": i}} for i in range(1000)] + [{"path": "u/a/t"}]
    out = prepare(batch, judge_all(seen), new_id=ids())
    assert seen == [{"path": "u/a/s"}, {"path": "u/a/t"}]
    assert out.ids[:2] == ["id-0", "id-1"] and out.rejected == {}
    assert out.specs[1] == {"path": "u/a/s", "id": "id-1", "args": {"n": 1}}
    assert out.specs[-1] == {"path": "u/a/t", "id": "id-1000", "args": {}}


@pytest.mark.parametrize(("spec", "why"), [
    ({"path": "u/x/missing"}, "path: no such script"),
    ({"path": "u/a/s", "args": [1]}, "args: must be a JSON object, got an array"),
    ({"path": "u/a/s", "args": {"n": 2**64}}, "args.n: integer out of the 64-bit range"),
    ({"path": "u/a/s", "args": {"x": float("nan")}}, "args.x: nan is not a JSON number"),
    ({"path": "u/a/s", "id": "nope"}, "id: 'nope' is not a UUID"),
    ({"path": "u/a/s", "id": 7}, "id: 7 is not a UUID"),
    (b"[1, 2]", "a job spec must be a JSON object, got an array"),
    ("{broken", "spec is not valid JSON"),
])
def test_bad_specs_are_rejected_saying_why(spec: Any, why: str) -> None:
    """A bad spec among good ones: rejected at its index with the reason; the others kept."""
    out = prepare([{"path": "u/a/s"}, spec, {"path": "u/a/s"}], judge_all([]), new_id=ids())
    assert list(out.rejected) == [1] and why in out.rejected[1]
    assert out.places == [0, 2] and out.ids[1] == ""


def test_producer_ids_are_kept_and_duplicates_named() -> None:
    """A given id is canonical; one that exists, or came earlier in the batch, is a duplicate."""
    taken = "11111111-2222-3333-4444-555555555555"
    batch = [{"path": "u/a/s", "id": UUID.upper()}, {"path": "u/a/s", "id": taken},
             {"path": "u/a/s", "id": UUID}, {"path": "u/a/s"}]
    out = prepare(batch, judge_all([]), new_id=ids(), taken=lambda given: set(given) & {taken})
    assert out.ids == [UUID, taken, UUID, "id-0"]
    assert out.duplicates == [1, 2] and out.places == [0, 3]


@pytest.mark.parametrize(("a", "b", "same"), [
    ({"path": "p", "tag": "t"}, {"tag": "t", "path": "p"}, True),
    ({"path": "p", "retry": {"max": 2}}, {"retry": {"max": 2}, "path": "p"}, True),
    ({"path": "p", "retry": {"max": 2}}, {"path": "p", "retry": {"max": 3}}, False),
    ({"path": "p"}, {"path": "p", "priority": 1}, False),
])
def test_template_key(a: dict[str, Any], b: dict[str, Any], same: bool) -> None:
    """Equal templates have equal keys, whatever their order or nesting."""
    assert (template_key(a) == template_key(b)) is same


def test_a_spec_model_and_empty_args() -> None:
    """A JobSpec is taken as its fields; missing args are an empty object."""
    assert as_data(JobSpec(path="u/a/s")) == {"path": "u/a/s", "args": {}, "priority": 0}
    assert job_args(None) == {}


def test_a_stored_batch_round_trips_with_its_new_ids() -> None:
    """pack_batch / unpack_batch: specs and which ids were generated, in order."""
    out = prepare([{"path": "u/a/s"}, {"path": "u/a/s", "id": UUID}], judge_all([]),
                  new_id=ids())
    assert unpack_batch(pack_batch(out, 1_700_000_000_000)) == \
        (out.specs, [True, False], 1_700_000_000_000)


@pytest.mark.parametrize(("payload", "expected"), [
    (b"\xc1", None),  # not msgpack
    (codec.pack([{"path": "p"}]), None),  # not a map
    (codec.pack({"specs": [1]}), None),  # a spec that is no object
    (codec.pack({"specs": [{"path": "p"}], "generated": [1]}), ([{"path": "p"}], [False], None)),
    (codec.pack({"specs": [{"path": "p"}]}), ([{"path": "p"}], [False], None)),
    (codec.pack({"specs": [{"path": "p"}], "created_at": "soon"}), ([{"path": "p"}], [False], None)),
    (codec.pack({"specs": [{"path": "p"}], "created_at": True}), ([{"path": "p"}], [False], None)),
    (codec.pack({"specs": [{"path": "p"}], "created_at": 5}), ([{"path": "p"}], [False], 5)),
])
def test_unpack_batch_refuses_what_is_no_batch(payload: bytes, expected: Any) -> None:
    """Not a batch: None; flags that are not one boolean per spec: every id claimed; a
    push time that is no epoch-ms integer: none (the jobs are created at admission)."""
    assert unpack_batch(payload) == expected
