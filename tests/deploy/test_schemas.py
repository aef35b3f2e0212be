"""Every deploy file against the schema of the tool that reads it, and the Pod Security levels."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as monitoring
from compose_spec import PyOptions
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
# The oldest Kubernetes the manifests support (appArmorProfile in securityContext: 1.30),
# and the newest that kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CUSTOM_RESOURCES: dict[tuple[str, str], type[BaseModel]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
    ("monitoring.coreos.com/v1", "PodMonitor"): monitoring.PodMonitor,
}
# What Pod Security "restricted" allows (kubernetes.io/docs/concepts/security/pod-security-standards).
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
SANDBOX_CAPS = {"SYS_ADMIN", "SETUID", "SETGID", "KILL", "CHOWN"}


def _documents() -> list[tuple[str, dict[str, Any]]]:
    files = sorted(K8S.rglob("*.yaml"))
    assert files
    return [(str(path.relative_to(ROOT)), doc) for path in files
            for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _by_name(kind: str, name: str, directory: str = "deploy/k8s/") -> dict[str, Any]:
    (doc,) = [d for path, d in _documents()
              if d["kind"] == kind and d["metadata"]["name"] == name and path.startswith(directory)
              and "/" not in path.removeprefix(directory)]
    return doc


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_match_the_api_schema(version: str) -> None:
    """Every built-in object validates, strictly (no unknown field), with kubernetes-validate."""
    checked = 0
    for path, doc in _documents():
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
        checked += 1
    assert checked >= 8


def test_custom_resources_match_their_crds() -> None:
    """KEDA and Prometheus Operator objects validate against models generated from their CRDs.

    The models ignore unknown fields, so a field they drop on a round trip is one the
    CRD does not have (a typo KEDA would silently ignore).
    """
    seen = set()
    for path, doc in _documents():
        model = CUSTOM_RESOURCES.get((doc["apiVersion"], doc["kind"]))
        if model is None:
            continue
        parsed = model.model_validate(doc)
        assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) == doc, (
            f"{path}: a field unknown to the {doc['kind']} CRD"
        )
        seen.add(doc["kind"])
    assert seen == {"ScaledObject", "TriggerAuthentication", "PodMonitor"}


def test_custom_resource_check_catches_an_unknown_field() -> None:
    """The round trip above does tell a misspelt field."""
    doc = _by_name("ScaledObject", "gristmill-worker-default", "deploy/k8s/keda/")
    doc["spec"]["cooldownPeriods"] = doc["spec"].pop("cooldownPeriod")
    parsed = keda.ScaledObject.model_validate(doc)
    assert parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) != doc


def test_compose_file_matches_the_compose_specification() -> None:
    """docker-compose.yml parses and validates under the Compose specification (compose-spec)."""
    compose = PyOptions(apply_merge=True).from_yaml(COMPOSE.read_text())
    compose.validate()
    assert {"redis", "redis-credentials", "scheduler", "worker", "api"} <= set(compose.service_names())
    with pytest.raises(ValueError, match="stop_grace_periods"):
        PyOptions(apply_merge=True).from_yaml(
            COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periods:"))


# -- Pod Security -----------------------------------------------------------------------------


def _restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What keeps a pod spec from Pod Security "restricted" (the checks that apply here)."""
    found = []
    pod_ctx = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(key)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {kinds}")
    for container in pod.get("initContainers", []) + pod["containers"]:
        ctx = container.get("securityContext", {})
        name = container["name"]

        def setting(key: str, ctx: dict[str, Any] = ctx) -> Any:
            return ctx.get(key, pod_ctx.get(key))

        if ctx.get("privileged"):
            found.append(f"{name}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if setting("runAsNonRoot") is not True or setting("runAsUser") == 0:
            found.append(f"{name}: may run as root")
        seccomp = (setting("seccompProfile") or {}).get("type")
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            found.append(f"{name}: seccomp profile {seccomp}")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            found.append(f"{name}: capabilities not dropped")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities {caps['add']}")
        apparmor = (ctx.get("appArmorProfile") or pod_ctx.get("appArmorProfile") or {}).get("type")
        if apparmor == "Unconfined":
            found.append(f"{name}: AppArmor unconfined")
    return found


def _pods() -> dict[str, dict[str, Any]]:
    return {f"{path}:{doc['metadata']['name']}": doc["spec"]["template"]["spec"]
            for path, doc in _documents() if doc["kind"] in {"Deployment", "StatefulSet"}}


def test_redis_api_and_scheduler_are_pod_security_restricted() -> None:
    """Every pod but the sandboxing worker meets Pod Security "restricted"."""
    pods = _pods()
    worker = "deploy/k8s/worker-default.yaml:gristmill-worker-default"
    restricted = {key: pod for key, pod in pods.items() if key != worker}
    assert len(restricted) == len(pods) - 1 >= 4
    for key, pod in restricted.items():
        assert _restricted_violations(pod) == [], key


def test_restricted_check_rejects_the_sandboxing_worker() -> None:
    """The check above can fail: the sandboxing worker is not "restricted", for stated reasons."""
    pod = _pods()["deploy/k8s/worker-default.yaml:gristmill-worker-default"]
    violations = " ".join(_restricted_violations(pod))
    for reason in ("may run as root", "adds capabilities", "AppArmor unconfined"):
        assert reason in violations


def test_worker_has_what_the_job_sandbox_needs() -> None:
    """Root in its container, CAP_SYS_ADMIN + the uid-switching caps, AppArmor unconfined."""
    deployment = _by_name("Deployment", "gristmill-worker-default")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ctx = container["securityContext"]
    assert ctx["runAsUser"] == 0 and ctx["runAsNonRoot"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert set(ctx["capabilities"]["add"]) >= SANDBOX_CAPS
    assert pod["securityContext"]["appArmorProfile"]["type"] == "Unconfined"
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert "--unsafe-shared-user" not in container["args"]
    # The same in Compose.
    worker = yaml.safe_load(COMPOSE.read_text())["services"]["worker"]
    assert worker["user"] == "0:0" and worker["cap_drop"] == ["ALL"]
    assert set(worker["cap_add"]) >= SANDBOX_CAPS
    assert "apparmor=unconfined" in worker["security_opt"]


def test_unsafe_alternative_is_restricted_and_says_so() -> None:
    """unsafe-shared-user/ replaces the worker Deployment by a restricted one with the unsafe flag."""
    safe = _by_name("Deployment", "gristmill-worker-default")
    unsafe_path = K8S / "unsafe-shared-user" / "worker-default.yaml"
    (unsafe,) = yaml.safe_load_all(unsafe_path.read_text())
    assert unsafe["metadata"]["name"] == safe["metadata"]["name"]
    (container,) = unsafe["spec"]["template"]["spec"]["containers"]
    assert "--unsafe-shared-user" in container["args"]
    assert _restricted_violations(unsafe["spec"]["template"]["spec"]) == []
    assert "UNSAFE" in unsafe_path.read_text()


def test_workers_have_a_disruption_budget() -> None:
    """Each worker Deployment has a PodDisruptionBudget selecting exactly its pods."""
    docs = [d for path, d in _documents() if "/" not in path.removeprefix("deploy/k8s/")]
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    workers = [d for d in docs if d["kind"] == "Deployment"
               and d["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]
    assert workers
    for worker in workers:
        selector = worker["spec"]["selector"]["matchLabels"]
        assert any(b["spec"]["selector"]["matchLabels"] == selector for b in budgets), worker


def test_pod_monitor_scrapes_every_metrics_port() -> None:
    """The PodMonitor covers each named port that serves /metrics, the API's included."""
    monitor = _by_name("PodMonitor", "gristmill", "deploy/k8s/monitoring/")
    ports = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    served = set()
    for pod in _pods().values():
        for container in pod["containers"]:
            if str(container["image"]).startswith("gristmill"):
                served |= {p["name"] for p in container["ports"]}
    assert served == {"metrics", "http"} and ports == served


# -- Redis memory ------------------------------------------------------------------------------


def _bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)(mb|gb|Mi|Gi|g|m)?", size)
    assert match, size
    unit = {"mb": 2**20, "gb": 2**30, "Mi": 2**20, "Gi": 2**30, "g": 2**30, "m": 2**20, None: 1}
    return int(match[1]) * unit[match[2]]


def _maxmemory(args: list[str]) -> int:
    assert "--maxmemory-policy" in args and args[args.index("--maxmemory-policy") + 1] == "noeviction"
    return _bytes(args[args.index("--maxmemory") + 1])


def test_redis_maxmemory_is_below_its_memory_limit() -> None:
    """noeviction needs a maxmemory, with headroom under the container limit (a fork, buffers)."""
    redis = yaml.safe_load(COMPOSE.read_text())["services"]["redis"]
    assert _maxmemory(redis["command"]) <= 0.8 * _bytes(redis["mem_limit"])
    statefulset = _by_name("StatefulSet", "redis")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    limit = _bytes(container["resources"]["limits"]["memory"])
    assert _maxmemory(container["args"]) <= 0.8 * limit


# -- the image ----------------------------------------------------------------------------------


def test_dockerfile_pins_base_images_by_digest() -> None:
    """Every FROM names a tag and a sha256 digest."""
    bases = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert bases
    for base in bases:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), base


def test_dockerfile_exposes_every_port_deploy_uses() -> None:
    """EXPOSE lists the API port and both metrics ports."""
    exposed = re.findall(r"^EXPOSE\s+(.+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert {"8000", "9100", "9101"} <= {p for line in exposed for p in line.split()}


def _locked(path: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def test_lock_file_covers_the_dependencies_with_hashes() -> None:
    """requirements.lock pins, with hashes, every dependency of pyproject.toml (+ embedded)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["embedded"]]
    lock = ROOT / "requirements.lock"
    locked = _locked(lock)
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", requirement)[0]).lower()
        assert name in locked, f"{requirement} is not in requirements.lock: regenerate it (its header)"
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text().split("\n", 5)[-1])
    assert all("--hash=sha256:" in e for e in entries if "==" in e)
    assert "setuptools" in _locked(ROOT / "requirements-build.lock")
    text = DOCKERFILE.read_text()
    # Dependencies in their own layer, before the source is copied.
    assert text.index("--require-hashes") < text.index("COPY . .")
    assert "pip uninstall" in text and "--without-pip" in text
