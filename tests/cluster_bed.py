"""A real multi-node Ray cluster on one machine, made of `ray start` processes as on a real cluster.

The head runs the dashboard/job server (token auth on, as Ray sets it up by default); further nodes
join it with `ray start --address`, each with its own ports, CPUs and custom resources (e.g. a "GPU"
node with `gpu_node` for the trainer, CPU-only nodes with `data_node` for the decode actors). Every
node runs in its own process group, so a node is stopped -- or lost, with SIGKILL to its raylet and
everything on it -- without touching the other nodes or any other Ray on the machine (never
`ray stop`, which would stop every Ray here). Used by tests/test_cluster.py and the node-fault
benchmark.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def marker(name: str) -> str:
    """The custom resource (1 unit) that names a node of the bed."""
    return f"bed_{name}"


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    log: Path
    resources: dict[str, float] = field(default_factory=dict)
    node_id: str = ""  # the GCS's id, once the node has joined

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class NodeExited(RuntimeError):
    """`ray start` exited before its node joined. The ports a node is given are free when chosen, but
    the other Rays of this machine (the session's, a bed's earlier nodes still exiting) take random
    ports too; the bed starts such a node once more on fresh ports (its log kept as <name>.failed.log)."""


class ClusterBed:
    """Start with `start_head`, grow with `add_node`, lose a node with `kill_node`, end with `stop`."""

    def __init__(self, work: Path, env: dict[str, str] | None = None) -> None:
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", **(env or {})}
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: dict[str, Node] = {}
        self.gcs_port = 0
        self.dashboard_port = 0
        self._temp_dirs: list[str] = []

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    # ---------------------------------------------------------------- nodes

    def _start(self, name: str, args: list[str], resources: dict[str, float], temp: str | None = None) -> Node:
        resources = {**resources, marker(name): 1}  # tells the nodes apart in the GCS's node table
        agent, agent_grpc, metrics, runtime_env = free_ports(4)
        log = self.work / f"{name}.log"
        # TMPDIR: the node's processes keep their temporary files (Ray Train's local checkpoint copies,
        # the video cache of data at a URI) in the node's own folder, as on a machine of their own.
        env = {**self.env, "TMPDIR": temp} if temp else self.env
        with open(log, "w") as sink:
            process = subprocess.Popen(
                [RAY, "start", "--block", "--disable-usage-stats", f"--dashboard-agent-listen-port={agent}",
                 f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
                 f"--runtime-env-agent-port={runtime_env}", *args, f"--resources={json.dumps(resources)}"],
                env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, process, log, resources)
        self.nodes[name] = node
        return node

    def start_head(self, num_cpus: int, resources: dict[str, float] | None = None, timeout_s: float = 120) -> Node:
        # Creates ~/.ray/auth_token if missing (a local ray.init() does the same); no-op otherwise.
        subprocess.run([RAY, "get-auth-token", "--generate"], env=self.env, check=True, capture_output=True,
                       timeout=60)
        for attempt in range(2):
            self.gcs_port, self.dashboard_port, client = free_ports(3)
            node = self._start("head", ["--head", f"--num-cpus={num_cpus}", f"--port={self.gcs_port}",
                                        "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                                        f"--ray-client-server-port={client}"], resources or {})
            try:
                self._wait(lambda node=node: self._head_ready() and self._joined(node), timeout_s, node,
                           "the head node")
                return node
            except NodeExited:
                if attempt:
                    raise
                self._drop_failed(node)  # then once more on fresh ports (see NodeExited)
        raise AssertionError("unreachable")

    def add_node(self, name: str, num_cpus: int, resources: dict[str, float] | None = None,
                 timeout_s: float = 120) -> Node:
        return self.add_nodes([(name, num_cpus, resources or {})], timeout_s)[0]

    def add_nodes(self, specs: list[tuple[str, int, dict[str, float]]], timeout_s: float = 120) -> list[Node]:
        """Start worker nodes (name, CPUs, custom resources) at once, then wait until all have joined:
        each `ray start` takes seconds, mostly its own start-up, so they overlap well."""
        started = [self._start_worker(*spec) for spec in specs]
        for i, node in enumerate(started):
            try:
                self._wait(lambda node=node: self._joined(node), timeout_s, node, f"node {node.name} to join")
            except NodeExited:
                self._drop_failed(node)
                node = started[i] = self._start_worker(*specs[i])  # once more on fresh ports (see NodeExited)
                self._wait(lambda node=node: self._joined(node), timeout_s, node, f"node {node.name} to join")
        return started

    def _start_worker(self, name: str, num_cpus: int, resources: dict[str, float]) -> Node:
        # A temp dir of its own, as on a separate machine: nodes sharing one would share (and
        # garbage-collect) each other's runtime-env files, e.g. a job's uploaded working dir.
        # Short path: the sockets under it must fit in 107 characters.
        temp = tempfile.mkdtemp(prefix="rb-")
        self._temp_dirs.append(temp)
        return self._start(name, [f"--address={self.gcs_address}", f"--num-cpus={num_cpus}", f"--temp-dir={temp}"],
                           resources, temp)

    def _drop_failed(self, node: Node) -> None:
        """What is left of a node whose `ray start` exited is killed; its log is kept as <name>.failed.log."""
        self.kill_node(node.name)
        node.log.replace(node.log.with_name(f"{node.name}.failed.log"))

    def kill_node(self, name: str) -> None:
        """The node is lost: SIGKILL to its `ray start`, raylet and every worker on it (one process group)."""
        node = self.nodes[name]
        try:
            os.killpg(node.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.process.wait(timeout=30)

    def stop(self) -> None:
        """Every node at once: `ray start --block` drains on SIGTERM (5 s at most), the rest is killed."""
        for node in self.nodes.values():
            if node.alive:
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for node in self.nodes.values():
            try:
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(node.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for temp in self._temp_dirs:
            shutil.rmtree(temp, ignore_errors=True)
        self._forget_head()

    def _forget_head(self) -> None:
        """A head killed before its own clean-up leaves /tmp/ray/ray_current_cluster naming it, and a
        later `ray.init()` or `--cluster auto` on this machine would look for a dead cluster there."""
        from ray._common.utils import get_ray_address_file
        from ray._private.utils import read_ray_address

        if self.gcs_port and (read_ray_address() or "").endswith(f":{self.gcs_port}"):
            Path(get_ray_address_file(None)).unlink(missing_ok=True)

    # ---------------------------------------------------------------- state (the head's HTTP API)

    def _get(self, path: str) -> Any:
        token = self._token()
        request = urllib.request.Request(self.dashboard + path,
                                         headers={"Authorization": f"Bearer {token}"} if token else {})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def _token(self) -> str | None:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
        return os.environ.get("RAY_AUTH_TOKEN") or (path.read_text().strip() if path.is_file() else None)

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The nodes the GCS sees alive (State API), each with its node_id and resources."""
        try:
            data = self._get("/api/v0/nodes?limit=100&detail=true")
        except (urllib.error.URLError, OSError, ValueError):
            return []
        return [n for n in data["data"]["result"]["result"] if n.get("state") == "ALIVE"]

    def actors(self) -> list[dict[str, Any]]:
        """Every actor the GCS knows, dead ones included (class name, state, node id)."""
        data = self._get("/api/v0/actors?limit=10000&detail=true")
        return data["data"]["result"]["result"]

    def node_names(self) -> dict[str, str]:
        """node_id -> the bed's name of every node that joined (lost ones included)."""
        return {node.node_id: name for name, node in self.nodes.items() if node.node_id}

    def _joined(self, node: Node) -> bool:
        """Whether the GCS lists `node` alive (found by its marker resource); records its id."""
        for info in self.alive_nodes():
            if marker(node.name) in info.get("resources_total", {}):
                node.node_id = info["node_id"]
                return True
        return False

    # ---------------------------------------------------------------- helpers

    def _head_ready(self) -> bool:
        """The dashboard answers the State API and `ray start` recorded the head in
        /tmp/ray/ray_current_cluster, which `--cluster auto` reads (it is written last)."""
        from ray._private.utils import read_ray_address

        if not (read_ray_address() or "").endswith(f":{self.gcs_port}"):
            return False
        return bool(self.alive_nodes())

    def _wait(self, ready, timeout_s: float, node: Node, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not node.alive:
                raise NodeExited(f"{what} did not come up, `ray start` exited: {node.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up in {timeout_s:.0f} s: {node.log.read_text()[-2000:]}")
            time.sleep(0.5)
