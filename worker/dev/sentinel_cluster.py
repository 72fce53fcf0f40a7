"""A Redis primary, its replicas and three Sentinels on free loopback ports, for failover tests and demos.

Every process is a ``redis-server`` this object starts and stops by pid (the sentinels with
``--sentinel`` and a writable config file each, as Sentinel rewrites it), so a test can SIGKILL the
primary and watch Sentinel promote the replica without touching any shared Redis. Nothing is
persisted: a node started again comes back as a replica of the current primary and resyncs.

``start()`` returns only once the replicas finished their first sync and every sentinel sees the
others and the replicas: a write made before that would not survive a failover, and an election
needs the sentinels to know each other.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from worker.dev.embedded import free_port

REDIS_SERVER = shutil.which("redis-server")


@dataclass
class RedisNode:
    """One data node; ``process`` is None while it is down."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class SentinelNode:
    port: int
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class SentinelCluster:
    """``with SentinelCluster() as cluster:`` runs a primary, ``replicas`` replicas and ``sentinels`` sentinels."""

    master_name: str = "aew"
    replicas: int = 1
    sentinels: int = 3
    down_after_ms: int = 1000
    """How long a primary must be silent before a sentinel calls it down; failover follows in about 1-2 s."""
    failover_timeout_ms: int = 5000
    password: str | None = None
    """The data nodes' ``requirepass`` (and the sentinels' ``auth-pass`` to them)."""
    sentinel_password: str | None = None
    """The sentinels' own ``requirepass``."""
    directory: Path | None = None
    nodes: list[RedisNode] = field(default_factory=list)
    sentinel_nodes: list[SentinelNode] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 30) -> SentinelCluster:
        if REDIS_SERVER is None:
            raise RuntimeError("the sentinel cluster needs the redis-server binary (apt-get install redis-server)")
        if self.directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="aew-sentinel-")
            self.directory = Path(self._tmp.name)
        try:
            primary = self._new_node()
            self._run_node(primary, replica_of=None)
            for _ in range(self.replicas):
                self._run_node(self._new_node(), replica_of=primary)
            for _ in range(self.sentinels):
                self._run_sentinel(primary)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process this cluster started (SIGKILL: nothing to persist), and remove its files."""
        for process in [node.process for node in self.nodes] + [node.process for node in self.sentinel_nodes]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what clients need -------------------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.sentinel_nodes]

    @property
    def sentinels_setting(self) -> str:
        """``EXPORT_WORKER_REDIS_SENTINELS``: comma-separated ``host:port``."""
        return ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)

    def data_url(self, db: int = 0) -> str:
        """``EXPORT_WORKER_REDIS_URL``: the database and the password; the host is the first primary's."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.nodes[0].port}/{db}"

    def settings(self, db: int = 0) -> dict[str, Any]:
        """The worker settings that point at this cluster through its sentinels."""
        values: dict[str, Any] = {
            "redis_url": self.data_url(db),
            "redis_sentinels": self.sentinels_setting,
            "redis_sentinel_master": self.master_name,
        }
        if self.sentinel_password:
            values["redis_sentinel_password"] = self.sentinel_password
        return values

    def client(self, node: RedisNode, **kwargs: Any) -> redis.Redis:
        """A direct client of one data node (not through Sentinel)."""
        return redis.Redis(*node.address, password=self.password, socket_timeout=5, **kwargs)

    def sentinel_client(self, node: SentinelNode) -> redis.Redis:
        return redis.Redis("127.0.0.1", node.port, password=self.sentinel_password, socket_timeout=2)

    # -- failover ----------------------------------------------------------------------------------

    def primary(self) -> RedisNode:
        """The node most sentinels name as primary now."""
        votes: dict[int, int] = {}
        for sentinel in self.sentinel_nodes:
            try:
                with self.sentinel_client(sentinel) as client:
                    answer: Any = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
            except redis.RedisError:
                continue
            if answer:
                port = int(answer[1])
                votes[port] = votes.get(port, 0) + 1
        if not votes:
            raise RuntimeError(f"no sentinel answers for {self.master_name!r}")
        port = max(votes, key=lambda key: votes[key])
        return next(node for node in self.nodes if node.port == port)

    def kill_primary(self) -> RedisNode:
        """SIGKILL the current primary, as when its host dies; returns it (down)."""
        node = self.primary()
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(10)
        node.process = None
        return node

    def wait_for_new_primary(self, old: RedisNode, timeout: float = 30) -> RedisNode:
        """Block until the sentinels name a running node other than ``old`` and it accepts writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                node = self.primary()
            except RuntimeError:
                node = old
            if node is not old and node.running and self._role(node) == "master":
                return node
            time.sleep(0.05)
        raise TimeoutError(f"no new primary for {self.master_name!r} after {timeout}s:\n{self.logs()}")

    def restart(self, node: RedisNode, timeout: float = 30) -> None:
        """Start a stopped node again as a replica of the current primary, and wait for its sync."""
        assert not node.running, "restart a node that is down"
        self._run_node(node, replica_of=self.primary())
        self.wait_ready(timeout)

    # -- waiting -----------------------------------------------------------------------------------

    def wait_ready(self, timeout: float = 30) -> None:
        """Replicas synced, and each sentinel sees the others and every running replica."""
        deadline = time.monotonic() + timeout
        replicas = sum(1 for node in self.nodes if node.running) - 1
        while time.monotonic() < deadline:
            if self._replicas_synced() and all(self._sentinel_sees(sentinel, replicas) for sentinel in self.sentinel_nodes):
                return
            time.sleep(0.1)
        raise TimeoutError(f"sentinel cluster not ready after {timeout}s:\n{self.logs()}")

    def _replicas_synced(self) -> bool:
        for node in self.nodes:
            if not node.running or self._role(node) != "slave":
                continue
            with self.client(node) as client:
                info: Any = client.info("replication")
            if info.get("master_link_status") != "up" or info.get("master_sync_in_progress"):
                return False
        return True

    def _sentinel_sees(self, sentinel: SentinelNode, replicas: int) -> bool:
        try:
            with self.sentinel_client(sentinel) as client:
                state: Any = client.sentinel_master(self.master_name)
        except redis.RedisError:
            return False
        return (
            int(state["num-other-sentinels"]) >= self.sentinels - 1
            and int(state["num-slaves"]) >= replicas
            and not state["is_sdown"]
            and not state["is_odown"]
        )

    def _role(self, node: RedisNode) -> str | None:
        try:
            with self.client(node) as client:
                info: Any = client.info("replication")
        except redis.RedisError:
            return None
        return str(info.get("role"))

    def logs(self) -> str:
        assert self.directory is not None
        return "\n".join(
            f"== {path.name}\n{path.read_text(errors='replace')[-3000:]}" for path in sorted(self.directory.glob("*.log"))
        )

    # -- processes ---------------------------------------------------------------------------------

    def _new_node(self) -> RedisNode:
        assert self.directory is not None
        port = free_port()
        node = RedisNode(port=port, log=self.directory / f"redis-{port}.log")
        self.nodes.append(node)
        return node

    def _run_node(self, node: RedisNode, replica_of: RedisNode | None) -> None:
        assert REDIS_SERVER is not None and self.directory is not None
        node_dir = self.directory / f"node-{node.port}"
        node_dir.mkdir(exist_ok=True)
        args = [
            REDIS_SERVER,
            "--port", str(node.port), "--bind", "127.0.0.1", "--dir", str(node_dir),
            "--save", "", "--appendonly", "no", "--logfile", str(node.log),
            # The first sync starts at once (Redis waits 5 s by default for more replicas to join).
            "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of.port)]
        node.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_answering(node)

    def _run_sentinel(self, primary: RedisNode) -> None:
        assert REDIS_SERVER is not None and self.directory is not None
        port = free_port()
        config = self.directory / f"sentinel-{port}.conf"
        log = self.directory / f"sentinel-{port}.log"
        name = self.master_name
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            f"logfile {log}",
            f"sentinel monitor {name} 127.0.0.1 {primary.port} {self.sentinels // 2 + 1}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {name} {self.password}")
        if self.sentinel_password:
            lines += [f"requirepass {self.sentinel_password}", f"sentinel sentinel-pass {self.sentinel_password}"]
        config.write_text("\n".join(lines) + "\n")
        node = SentinelNode(port=port, config=config, log=log)
        node.process = subprocess.Popen(
            [REDIS_SERVER, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.sentinel_nodes.append(node)
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.sentinel_client(node) as client:
                    client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline or node.process.poll() is not None:
                    raise RuntimeError(f"sentinel on port {port} did not start:\n{self.logs()}") from None
                time.sleep(0.05)

    def _wait_answering(self, node: RedisNode) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client(node) as client:
                    client.ping()
                return
            except redis.RedisError:
                assert node.process is not None
                if time.monotonic() > deadline or node.process.poll() is not None:
                    raise RuntimeError(f"redis-server on port {node.port} did not start:\n{self.logs()}") from None
                time.sleep(0.05)
