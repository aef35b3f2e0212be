"""Prometheus files under promtool: the alert rules' unit tests, the config, the dashboard's queries."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from common import metrics

# The first test may install promtool (tests/deploy/tools.py): allow for a download.
pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")
DASHBOARD = ROOT / "deploy" / "grafana" / "gristmill-dashboard.json"
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$group": ".*"}


def _promtool(promtool: str, *args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, check=False)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def _alert_names() -> set[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return {rule["alert"] for group in doc["groups"] for rule in group["rules"] if "alert" in rule}


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"])
            for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    """promtool check rules: alerts.yml parses, its PromQL included."""
    out = _promtool(promtool, "check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(_alert_names())} rules found" in out


def test_alert_unit_tests_pass(promtool: str) -> None:
    """promtool test rules: every alert fires on its failure and stays silent on a healthy fleet."""
    _promtool(promtool, "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)


def test_every_alert_has_unit_tests() -> None:
    """Each alert is unit-tested firing, and silent on the healthy idle fleet."""
    doc = yaml.safe_load(ALERT_TESTS.read_text())
    fired: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            if check["exp_alerts"]:
                fired.add(check["alertname"])
    (idle,) = [case for case in doc["tests"] if case["name"] == "healthy idle fleet fires nothing"]
    silent = {check["alertname"] for check in idle["alert_rule_test"] if not check["exp_alerts"]}
    assert _alert_names() - fired == set(), "alerts never seen firing"
    assert _alert_names() - silent == set(), "alerts not checked on the healthy idle fleet"


def test_alert_histogram_bounds_exist() -> None:
    """An `le` that an alert selects is a bucket bound of that histogram in common/metrics.py."""
    text = ALERTS.read_text()
    histograms = {"gristmill_job_start_lateness_seconds": metrics.START_LATENESS,
                  "gristmill_scheduler_promote_lag_seconds": metrics.PROMOTE_LAG,
                  "gristmill_job_duration_seconds": metrics.JOB_DURATION}
    found = re.findall(r"(gristmill_[a-z_]+)_bucket\{[^}]*le=\"([^\"]+)\"", text)
    assert found, "no alert selects a bucket (GristmillStartLatenessHigh should)"
    for name, bound in found:
        families = list(histograms[name].collect())
        bounds = {s.labels["le"] for f in families for s in f.samples if s.name.endswith("_bucket")}
        if not bounds:  # a labelled histogram exposes no sample before its first observation
            bounds = {_float_repr(b) for b in histograms[name]._upper_bounds}
        assert bound in bounds, f"{name} has no bucket le={bound!r}: {sorted(bounds)}"


def _float_repr(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def test_prometheus_config_passes_promtool_check(promtool: str, tmp_path: Path) -> None:
    """promtool check config: prometheus.yml and the rule files it loads."""
    for path in PROMETHEUS.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    _promtool(promtool, "check", "config", str(tmp_path / "prometheus.yml"))


def test_dashboard_queries_parse_as_promql(promtool: str, tmp_path: Path) -> None:
    """Every dashboard query, Grafana's variables substituted, is valid PromQL (promtool)."""
    rules: list[dict[str, Any]] = []
    for i, (title, expr) in enumerate(_dashboard_exprs()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"{title}: unknown Grafana variable in {expr!r}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = _promtool(promtool, "check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in out


def _grouped_metrics() -> set[str]:
    """Sample names of the metrics that carry a `group` label."""
    names = {"gristmill_queue_depth", "gristmill_live_workers"}
    for collector in (metrics.JOBS_ENQUEUED, metrics.JOBS_STARTED, metrics.JOBS_COMPLETED,
                      metrics.JOBS_RECOVERED, metrics.JOB_DURATION, metrics.START_LATENESS,
                      metrics.PROMOTE_LAG, metrics.INBOX_ADMITTED, metrics.WORKER_BUSY,
                      metrics.REDIS_ERRORS):
        if "group" in collector._labelnames:
            name = collector._name
            names |= {name, f"{name}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


def test_dashboard_queries_follow_the_group_selector() -> None:
    """A query on a metric that has a `group` label selects group=~"$group"; no query counts all groups."""
    grouped = _grouped_metrics()
    for title, expr in _dashboard_exprs():
        for name, selector in re.findall(r"(gristmill_[a-z_]+)(\{[^}]*\})?", expr):
            if name in grouped:
                assert 'group=~"$group"' in selector, f"{title}: {name} ignores the group selector"
    titles = [title for title, expr in _dashboard_exprs() if 'group=~"$group"' not in expr]
    assert set(titles) <= {"Redis errors / s", "Recovered jobs and inbox outcomes"}, titles
