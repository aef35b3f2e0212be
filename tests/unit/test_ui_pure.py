"""Pure parts of the listing and the web UI: index ranges, main's signature, chart, forms, cookies."""

from __future__ import annotations

import pytest

from api.ui import views
from api.ui.pages import form_args, safe_next
from api.ui.session import csrf_value, split_cookie
from common import indexes
from common.errors import SpecError
from common.indexes import Window
from common.models import Job, Kind, Status
from jobs.signature import NO_DEFAULT, Param, python_params


def job(**fields: object) -> Job:
    data: dict[str, object] = {"id": "j", "kind": Kind.SCRIPT, "status": Status.SUCCESS,
                               "tag": "python3", "group": "default", "language": "python3",
                               "scheduled_for": 0, "created_at": 0}
    data.update(fields)
    return Job.model_validate(data)


@pytest.mark.parametrize(("window", "upper", "lower"), [
    (Window(), "+", "-"),
    (Window(cursor="0000000000005:b"), "(0000000000005:b", "-"),
    (Window(created_before=7), "(0000000000007", "-"),
    (Window(cursor="0000000000009:a", created_before=7), "(0000000000007", "-"),
    (Window(cursor="0000000000003:a", created_before=7, created_after=2),
     "(0000000000003:a", "[0000000000002"),
])
def test_window_bounds(window: Window, upper: str, lower: str) -> None:
    """The tighter of cursor and created_before is the upper bound; created_after the lower."""
    assert (window.max_bound(), window.min_bound()) == (upper, lower)


def test_members_sort_by_time_then_id_and_before_bound_excludes_its_millisecond() -> None:
    """Lexical order of members is creation order; "(<ts>" keeps every member of earlier ms only."""
    a, b, c = indexes.member(5, "b"), indexes.member(5, "c"), indexes.member(10, "a")
    assert sorted([c, b, a]) == [a, b, c]
    assert a < "0000000000006" < c
    assert indexes.split_member(c) == (10, "a")


def test_record_field_round_trips_through_the_trim_entry() -> None:
    """The record's ix field plus the final status is exactly what the trim removes."""
    j = job(id="x", created_at=42, created_by="u/alice", permissioned_as="g/ops",
            script_path="g/ops/s", schedule_path="g/ops/nightly")
    trim = indexes.parse_trim(indexes.trim_line(j))
    assert trim.member == indexes.member(42, "x")
    assert set(trim.entries) == {"kind:script", "path:g/ops/s", "by:u/alice:success",
                                 "as:g/ops:success", "tag:python3", "schedule:g/ops/nightly",
                                 "status:success"}
    assert indexes.record_field(j).split("\t")[0] == trim.member


def test_python_params_from_main() -> None:
    """Names, annotations, literal defaults; keyword-only too; no main gives None."""
    code = ("import x\n\ndef helper(a): pass\n\n"
            "async def main(n: int, name: str = 'Ada', *, flag: bool = False, when=x.now(),"
            " items: list[int] = [1]):\n    pass\n")
    params = python_params(code)
    assert params == [
        Param("n", "int"), Param("name", "str", "Ada", required=False),
        Param("flag", "bool", False, required=False), Param("when", "", NO_DEFAULT, required=False),
        Param("items", "list[int]", [1], required=False),
    ]
    assert [p.input_type for p in params] == ["number", "text", "checkbox", "text", "text"]
    assert [p.is_json for p in params] == [False, False, False, False, True]
    assert python_params("def other(): pass\n") is None
    assert python_params("def main(:\n") is None


def test_form_args_are_typed_by_annotation() -> None:
    """Numbers, checkboxes and JSON values convert; an empty optional is left to its default."""
    params = python_params("def main(n: int, f: float = 1.0, ok: bool = False, "
                           "xs: list[int] = [], s: str = 'a'):\n    pass\n")
    assert form_args(params, {"arg_n": "3", "arg_xs": "[1, 2]", "arg_ok": "on", "arg_s": ""}) == {
        "n": 3, "ok": True, "xs": [1, 2]}
    with pytest.raises(SpecError, match="n is required"):
        form_args(params, {})
    with pytest.raises(SpecError, match="not a valid int"):
        form_args(params, {"arg_n": "three"})
    assert form_args(None, {"args_json": '{"a": 1}'}) == {"a": 1}
    with pytest.raises(SpecError, match="JSON object"):
        form_args(None, {"args_json": "[1]"})


def test_chart_places_runs_by_time_and_duration() -> None:
    """The earliest run is at the left edge, the longest at the top; lines count per slice."""
    jobs = [job(id="a", created_at=1000, duration_ms=10),
            job(id="b", created_at=2000, duration_ms=40, status=Status.FAILURE),
            job(id="c", created_at=3000, status=Status.QUEUED)]
    chart = views.chart(jobs, now=5000)
    assert chart is not None
    by_id = {d.job_id: d for d in chart.dots}
    assert by_id["a"].x == views.PAD and by_id["c"].x == views.CHART_W - views.PAD
    assert by_id["b"].y == views.PAD and by_id["c"].y == views.CHART_H - views.PAD
    assert by_id["b"].status == "failure"
    assert chart.y_max_ms == 40
    assert views.chart([], now=0) is None


@pytest.mark.parametrize(("ms", "text"), [(None, ""), (5, "5 ms"), (1500, "1.5 s"),
                                          (125_000, "2 min 5 s")])
def test_fmt_duration(ms: int | None, text: str) -> None:
    assert views.fmt_duration(ms) == text


def test_cookies_csrf_and_redirects() -> None:
    """Cookie values carry their kind; CSRF values depend on the token; redirects stay local."""
    assert split_cookie("s:gm_abc") == ("s", "gm_abc")
    assert split_cookie("x:gm_abc") is None and split_cookie(None) is None
    assert split_cookie("s:") is None
    assert csrf_value("gm_a") != csrf_value("gm_b") and len(csrf_value("gm_a")) == 32
    assert safe_next("%2Fjobs%2F1") == "/jobs/1"
    assert safe_next("//evil.example/x") == "/runs"
    assert safe_next("https://evil.example/") == "/runs"


def test_upcoming_fires_follow_the_queued_one() -> None:
    """The queued fire first, then the cron's next ones; a paused schedule has none."""
    hour = 3_600_000
    assert views.upcoming("0 * * * *", "UTC", 10 * hour, 3) == [10 * hour, 11 * hour, 12 * hour]
    assert views.upcoming("0 * * * *", "UTC", None) == []
