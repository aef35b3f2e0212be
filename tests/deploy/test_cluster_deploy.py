"""The Redis Cluster variants of deploy/: Compose override, Kubernetes manifests, KEDA per group.

The schemas of every Kubernetes object here are checked with the others
(test_schemas.py reads deploy/k8s/ recursively); this module checks what makes
the cluster variant work: the cluster URL names nodes that exist, the nodes run
in cluster mode with replication credentials, each KEDA trigger reads its
group's ready list through a cluster-aware scaler, and the `keda` user can find
that list's shard on a real cluster.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
import yaml
from compose_spec import PyOptions

from common.connection import DEFAULT_PORT, cluster_nodes, connect, is_cluster_url
from common.keys import Keys
from gristmill.embedded import find_server_binary, free_port
from gristmill.embedded_cluster import EmbeddedCluster
from tests.deploy.test_redis_acl import _sh
from tests.deploy.test_schemas import _restricted_violations

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
COMPOSE_CLUSTER = ROOT / "deploy" / "docker-compose.cluster.yml"
K8S_CLUSTER = ROOT / "deploy" / "k8s" / "cluster"
GRISTMILL_SERVICES = ("scheduler", "worker", "api")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _one(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for path in sorted(K8S_CLUSTER.rglob("*.yaml")) for d in _docs(path)
              if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def compose_merge(base: Any, override: Any) -> Any:
    """What `docker compose -f base -f override` reads: mappings merged key by key,
    anything else (command, entrypoint, lists) replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = compose_merge(base[key], value) if key in base else value
        return merged
    return override


def _merged_compose() -> dict[str, Any]:
    merged = compose_merge(yaml.safe_load(COMPOSE.read_text()),
                           yaml.safe_load(COMPOSE_CLUSTER.read_text()))
    assert isinstance(merged, dict)
    return merged


# -- Compose ----------------------------------------------------------------------------------


def test_compose_cluster_override_matches_the_compose_specification() -> None:
    """The base file with the cluster override validates under the Compose specification."""
    merged = _merged_compose()
    compose = PyOptions(apply_merge=True).from_yaml(yaml.safe_dump(merged))
    compose.validate()
    assert {"redis", "redis-1", "redis-5", "redis-cluster-init"} <= set(compose.service_names())


def test_compose_processes_use_the_cluster_once_it_is_formed() -> None:
    """Scheduler, workers and API get a redis+cluster:// URL naming node services, and wait
    for the one-shot that forms the cluster; every node runs in cluster mode."""
    services = _merged_compose()["services"]
    nodes = [name for name, s in services.items()
             if "--cluster-enabled" in (s.get("command") or [])]
    assert len(nodes) == 6
    for name in GRISTMILL_SERVICES:
        service = services[name]
        url = service["environment"]["GRISTMILL_REDIS_URL"]
        assert is_cluster_url(url)
        assert {host for host, _ in cluster_nodes(url)} <= set(nodes)
        assert service["depends_on"]["redis-cluster-init"]["condition"] == \
            "service_completed_successfully"
        # The rest of the base service is kept (the password file, the sandbox's rights).
        assert service["environment"]["GRISTMILL_REDIS_PASSWORD_FILE"]
    assert services["worker"]["cap_add"]
    init = services["redis-cluster-init"]
    assert set(init["depends_on"]) == set(nodes)
    assert "--cluster-replicas 1" in init["command"][0]
    for node in nodes:
        command = services[node]["command"]
        assert command[1] == "/run/gristmill/redis/cluster.conf"  # masteruser/masterauth


def test_compose_credentials_write_the_replication_credentials(tmp_path: Path) -> None:
    """The override's redis-credentials script also writes cluster.conf for the replicas."""
    service = _merged_compose()["services"]["redis-credentials"]
    creds = tmp_path / "credentials"
    creds.mkdir()
    script = service["command"][0].replace("$$", "$").replace("/credentials", str(creds))
    _sh(script, tmp_path)
    password = (creds / "gristmill-password").read_text()
    conf = (creds / "cluster.conf").read_text().splitlines()
    assert conf == ["masteruser gristmill", f"masterauth {password}"]
    assert oct((creds / "cluster.conf").stat().st_mode)[-3:] == "400"


# -- Kubernetes -------------------------------------------------------------------------------


def test_kubernetes_cluster_url_names_the_statefulset_pods() -> None:
    """The cluster ConfigMap's URL names pods of the redis-cluster StatefulSet via its Service."""
    statefulset = _one("StatefulSet", "redis-cluster")
    service = statefulset["spec"]["serviceName"]
    pods = {f"redis-cluster-{i}.{service}" for i in range(statefulset["spec"]["replicas"])}
    url = _one("ConfigMap", "gristmill")["data"]["GRISTMILL_REDIS_URL"]
    assert is_cluster_url(url)
    assert {host for host, _ in cluster_nodes(url)} <= pods
    assert statefulset["spec"]["replicas"] == 6
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["redis-server", "/acl/cluster.conf"]
    assert "--cluster-enabled" in container["args"]
    assert {p["containerPort"] for p in container["ports"]} == {DEFAULT_PORT, DEFAULT_PORT + 10000}


def test_kubernetes_cluster_pods_are_restricted() -> None:
    """The nodes and the one-shot that forms the cluster meet Pod Security "restricted"."""
    for kind, name in (("StatefulSet", "redis-cluster"), ("Job", "redis-cluster-init")):
        pod = _one(kind, name)["spec"]["template"]["spec"]
        assert _restricted_violations(pod) == [], name


def test_keda_reads_each_group_ready_list_through_the_cluster() -> None:
    """Every ScaledObject of the cluster variant scales its group on that group's ready list,
    read by KEDA's redis-cluster scaler (which finds the shard), never the single-server one."""
    objects = [d for d in _docs(K8S_CLUSTER / "keda" / "scaledobject-default.yaml")
               if d["kind"] == "ScaledObject"]
    auths = {d["metadata"]["name"] for d in _docs(K8S_CLUSTER / "keda" / "triggerauthentication.yaml")}
    assert objects
    for obj in objects:
        group = obj["metadata"]["labels"]["gristmill/group"]
        triggers = obj["spec"]["triggers"]
        assert "redis" not in {t["type"] for t in triggers}  # a random node answers MOVED
        (cluster,) = [t for t in triggers if t["type"] == "redis-cluster"]
        assert cluster["metadata"]["listName"] == Keys("gm").group(group).ready
        assert cluster["authenticationRef"]["name"] in auths
    (auth,) = _docs(K8S_CLUSTER / "keda" / "triggerauthentication.yaml")
    assert {p["parameter"] for p in auth["spec"]["secretTargetRef"]} == \
        {"addresses", "username", "password"}


def _render_init(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Run the redis-cluster init container's script; return its output dir and passwords."""
    statefulset = _one("StatefulSet", "redis-cluster")
    (init,) = statefulset["spec"]["template"]["spec"]["initContainers"]
    secrets_dir, acl = tmp_path / "secrets", tmp_path / "acl"
    secrets_dir.mkdir()
    acl.mkdir()
    passwords = {name: os.urandom(16).hex() for name in ("gristmill", "inbox", "keda")}
    for name, password in passwords.items():
        (secrets_dir / f"{name}-password").write_text(password)
    script = init["args"][0].replace("$$", "$")
    script = script.replace("/secrets/", f"{secrets_dir}/").replace("/acl/", f"{acl}/")
    _sh(script, tmp_path)
    return acl, passwords


def test_kubernetes_node_configuration_starts_a_cluster_node(tmp_path: Path) -> None:
    """The init container's cluster.conf and ACL file are accepted by a real server in
    cluster mode, which then requires the gristmill user's password."""
    acl, passwords = _render_init(tmp_path)
    conf = (acl / "cluster.conf").read_text()
    assert f"masterauth {passwords['gristmill']}" in conf and "cluster-announce-hostname" in conf
    port = free_port()
    binary = find_server_binary(os.environ.get("GRISTMILL_TEST_REDIS_SERVER"))
    proc = subprocess.Popen(
        [binary, str(acl / "cluster.conf"), "--aclfile", str(acl / "users.acl"),
         "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "",
         "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
         "--cluster-config-file", str(tmp_path / "nodes.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, username="gristmill", password=passwords["gristmill"],
                             socket_timeout=5)
        end = time.monotonic() + 15
        while True:
            try:
                info = client.info("cluster")
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "the node refused its configuration"
                assert time.monotonic() < end, "the node did not answer"
                time.sleep(0.05)
        assert info["cluster_enabled"] == 1
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5).set("gm:x", "1")
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_keda_and_inbox_users_work_through_a_real_cluster(tmp_path: Path) -> None:
    """The `keda` and `inbox` users of the cluster manifests, on a real 3-primary cluster: a
    cluster client logged in as keda reads the slot map and a group's ready list length, one
    logged in as inbox pushes to the inbox, and neither can do anything else."""
    acl, passwords = _render_init(tmp_path)
    lines = (acl / "users.acl").read_text().splitlines()
    users = {line.split()[1]: line.split()[2:] for line in lines if line.split()[1] in ("keda", "inbox")}
    cluster = EmbeddedCluster(tmp_path / "cluster", primaries=3,
                              password=secrets.token_urlsafe(16))
    cluster.start()
    try:
        for node in cluster.nodes:
            with node.client() as admin:
                for name, rules in users.items():
                    admin.execute_command("ACL", "SETUSER", name, "reset", *rules)
        operator = connect(cluster.url)
        ready = Keys("gm").group("default").ready
        operator.rpush(ready, "a", "b")
        # As KEDA's scaler connects: no client name, only the slot map and LLEN.
        keda = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port,
                                          username="keda", password=passwords["keda"])
        assert keda.llen(ready) == 2
        for forbidden in (lambda: keda.lpush(ready, "x"), lambda: keda.llen("gm:inbox")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                forbidden()
        keda.close()
        producer = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port,
                                              username="inbox", password=passwords["inbox"])
        assert producer.lpush(Keys("gm").inbox, '{"path": "u/alice/hello"}') == 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            producer.llen(ready)
        producer.close()
        operator.close()
    finally:
        cluster.stop()
