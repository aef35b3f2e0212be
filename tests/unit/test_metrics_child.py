"""metrics.child: a labelled series looked up once, counting where labels() would."""

from __future__ import annotations

import pytest

from common import metrics

pytestmark = pytest.mark.timeout(10)


def test_child_is_the_labelled_series_and_is_kept() -> None:
    first = metrics.child(metrics.JOBS_COMPLETED, "g-child", "script", "success")
    assert first is metrics.child(metrics.JOBS_COMPLETED, "g-child", "script", "success")
    assert first is metrics.JOBS_COMPLETED.labels(group="g-child", kind="script", status="success")
    before = metrics.REGISTRY.get_sample_value(
        "gristmill_jobs_completed_total", {"group": "g-child", "kind": "script", "status": "success"})
    first.inc()
    after = metrics.REGISTRY.get_sample_value(
        "gristmill_jobs_completed_total", {"group": "g-child", "kind": "script", "status": "success"})
    assert after == (before or 0) + 1


def test_other_label_values_and_metrics_are_other_series() -> None:
    a = metrics.child(metrics.JOBS_STARTED, "g-child", "script")
    assert a is not metrics.child(metrics.JOBS_STARTED, "g-child", "preview")
    assert a is not metrics.child(metrics.JOBS_ENQUEUED, "g-child", "script")
