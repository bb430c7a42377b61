"""A Ray cluster of several nodes on this machine, for the tests and benchmarks of `vitexport batch` on Ray.

Each node is a ``ray start --block`` process on 127.0.0.1: the first the head (``--head``, its own GCS, dashboard
and client ports, temp folder), the others joining it (``--address``), each with its own agent, metrics, node
manager and object manager ports and ``cpus`` CPUs. The cluster has its own auth token (Ray's default token
file is shared by every cluster of the user) and a short drain timeout. Every process the nodes start is tracked
(`vitexport._util.procs`) and killed at the end if still there; nothing is killed by name. Linux only.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vitexport._util.procs import ProcessTree, free_ports
from vitexport.serving.http.background import child_env

NODE_START_S = 120.0
NODE_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
              "metrics-export-port", "node-manager-port", "object-manager-port")


@dataclass
class LocalCluster:
    """Where the cluster answers, the environment to run its drivers in, and its nodes' process trees."""

    address: str
    env: dict[str, str]
    trees: list[ProcessTree] = field(default_factory=list)
    left: list[int] = field(default_factory=list)  # processes still alive after the nodes stopped (then killed)


def _start_node(args: list[str], environ: dict[str, str], cpus: int) -> ProcessTree:
    ray_exe = Path(sys.executable).parent / "ray"
    proc = subprocess.Popen([str(ray_exe), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
                             "--disable-usage-stats", *args], env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    tree = ProcessTree(proc)
    deadline = time.monotonic() + NODE_START_S
    assert proc.stdout is not None
    for line in proc.stdout:  # `ray start --block` says so once the node is up
        tree.snapshot()
        if "block forever" in line or time.monotonic() > deadline:
            break
    if proc.poll() is not None:
        tree.stop(signal.SIGKILL, timeout=5)
        raise RuntimeError(f"`ray start {' '.join(args[:1])}` exited with {proc.returncode}")
    return tree


@contextmanager
def local_cluster(nodes: int = 2, cpus: int = 1, **extra_env: str) -> Iterator[LocalCluster]:
    """A head and ``nodes - 1`` more nodes with ``cpus`` CPUs each; stopped (second node first) when the block ends.
    ``extra_env`` goes to the nodes and belongs in the environment of drivers run against them (``cluster.env``)."""
    if not (Path(sys.executable).parent / "ray").exists():
        raise RuntimeError(f"no `ray` command beside {sys.executable}; pip install 'vitexport[batch]'")
    temp = tempfile.mkdtemp(prefix="rayb", dir="/tmp")  # short: Ray's socket paths must stay under 108 characters
    environ = child_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
                        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="1", **extra_env)
    ports = free_ports(3 + len(NODE_PORTS) * nodes)
    per_node = [[f"--{name}={p}" for name, p in zip(NODE_PORTS, ports[3 + i * len(NODE_PORTS):], strict=False)]
                for i in range(nodes)]
    cluster = LocalCluster(f"127.0.0.1:{ports[0]}", environ)
    try:
        cluster.trees.append(_start_node(["--head", f"--port={ports[0]}", "--dashboard-host=127.0.0.1",
                                          f"--dashboard-port={ports[1]}", f"--ray-client-server-port={ports[2]}",
                                          f"--temp-dir={temp}", *per_node[0]], environ, cpus))
        for i in range(1, nodes):
            cluster.trees.append(_start_node([f"--address={cluster.address}", *per_node[i]], environ, cpus))
        yield cluster
    finally:
        for tree in reversed(cluster.trees):
            cluster.left += tree.stop(signal.SIGTERM, timeout=30)[2]
        shutil.rmtree(temp, ignore_errors=True)


__all__ = ["LocalCluster", "local_cluster"]
