"""Prepare and dedup on a real Ray cluster: a head and two worker nodes started with `ray start`
(each its own process tree, temporary folder and ports), reached through RAY_ADDRESS as a
user's cluster would be, give the datasets the local executor gives.

The head offers no CPUs, so every task runs on a worker node. Each node runs `ray start
--block` in a session of its own, and only those sessions are ended afterwards (never `ray
stop`, which would stop every Ray node on the machine). The `languini` commands run as
processes of their own, as a user runs them: a Ray that an earlier test initialised inside
the test process (the CLI runner runs commands in-process) would otherwise be the driver's,
and its dead workers' objects fail this test with OwnerDiedError.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import languini
from helpers import tiny_corpus
from languini.data.dedup import read_duplicates

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="Ray is an optional extra")

WORKER_NODES = 2
START_SECONDS = 120
WORKER_PORTS = 50
START_ATTEMPTS = 4
STOP_SECONDS = 5  # a node's grace to end its processes on SIGTERM before they are killed


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def free_range(n: int) -> int:
    """The first of `n` consecutive free ports below the kernel's ephemeral range (where
    `free_ports` draws from), so no other port of the cluster lands inside it."""
    rng = random.Random()
    while True:
        base = rng.randrange(20000, 32000 - n)
        sockets = []
        try:
            for port in range(base, base + n):
                sockets.append(socket.socket())
                sockets[-1].bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()


def node_command(head_port: int, head: bool, temp_dir: Path, num_cpus: int) -> list[str]:
    ports, workers = free_ports(7), free_range(WORKER_PORTS)  # each raylet its own worker ports: shared ones crash it
    role = ["--head", f"--port={head_port}", "--include-dashboard=false", f"--ray-client-server-port={ports[6]}"] if head \
        else [f"--address=127.0.0.1:{head_port}"]
    return [
        str(Path(sys.executable).parent / "ray"), "start", "--block", *role, "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
        f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}", f"--metrics-export-port={ports[2]}",
        f"--dashboard-agent-listen-port={ports[3]}", f"--dashboard-agent-grpc-port={ports[4]}",
        f"--runtime-env-agent-port={ports[5]}", f"--min-worker-port={workers}", f"--max-worker-port={workers + WORKER_PORTS - 1}",
    ]  # fmt: skip


def alive_nodes(address: str, env: dict[str, str]) -> int:
    probe = ("import ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
             "print('alive', sum(n['Alive'] for n in ray.nodes()))" % address)
    try:
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=START_SECONDS)
    except subprocess.TimeoutExpired:  # the head is not answering yet
        return 0
    found = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("alive ")]
    return int(found[-1]) if found else 0


@pytest.fixture
def ray_cluster():
    """The environment of a driver of a head and WORKER_NODES worker nodes (RAY_ADDRESS set),
    each node killed (its whole session) at the end, whatever happened. Token authentication is
    off on the nodes and the drivers alike (Ray turns it on where it finds a token in ~/.ray,
    which another local Ray may have left)."""
    root = Path(tempfile.mkdtemp(prefix="lr-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    code_root = str(Path(languini.__file__).resolve().parents[1])  # the workers import this checkout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [code_root, os.environ.get("PYTHONPATH")])),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_agent_register_timeout_ms": str(START_SECONDS * 1000)}  # a loaded machine starts each node's agents slowly
    head_port = free_ports(1)[0]
    address = f"127.0.0.1:{head_port}"
    nodes: list[subprocess.Popen] = []
    try:
        for i in range(WORKER_NODES + 1):  # one at a time: a loaded machine starts three nodes at once too slowly
            for attempt in range(START_ATTEMPTS):
                log = open(root / f"node-{i}-{attempt}.log", "w")
                node = subprocess.Popen(node_command(head_port, i == 0, root / f"n{i}-{attempt}", 0 if i == 0 else 1), env=env,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                nodes.append(node)
                if wait_for_nodes(address, env, i + 1, node):
                    break
                stop(node)  # Ray gives a raylet 30 s to register; under load it may miss that: start it again
            else:
                pytest.fail(f"Ray node {i} did not start: " + (root / f"node-{i}-{attempt}.log").read_text()[-1500:])
        yield {**env, "RAY_ADDRESS": address}
    finally:
        for node in nodes:  # all at once: each takes a while to end its processes
            with_session(node, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for node in nodes:
            stop(node, max(0.0, deadline - time.monotonic()))
        shutil.rmtree(root, ignore_errors=True)


def wait_for_nodes(address: str, env: dict[str, str], count: int, node: subprocess.Popen) -> bool:
    """Whether `count` nodes are alive before `node` exits or START_SECONDS pass."""
    deadline = time.monotonic() + START_SECONDS
    while node.poll() is None and time.monotonic() < deadline:
        if alive_nodes(address, env) >= count:
            return True
        time.sleep(2)
    return False


def stop(node: subprocess.Popen, grace: float = STOP_SECONDS) -> None:
    """End a node's whole session (its raylet, object store and workers), nothing else."""
    with_session(node, signal.SIGTERM)
    try:
        node.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with_session(node, signal.SIGKILL)
        node.wait()


def with_session(node: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(node.pid, sig)
    except ProcessLookupError:
        pass


def run_languini(env: dict[str, str], *args: object) -> dict:
    """Run a `languini ... --json` command in a process of its own; its JSON answer."""
    out = subprocess.run([sys.executable, "-m", "languini.cli", *map(str, args), "--no-progress", "--json"], env=env,
                         capture_output=True, text=True, timeout=START_SECONDS)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_prepare_and_dedup_on_a_two_node_cluster_match_local(ray_cluster, tmp_path):
    corpus = tiny_corpus(tmp_path / "c.jsonl", n_docs=300)
    with corpus.open("a") as f:  # copies for dedup to find, in and across domains
        f.write(json.dumps({"text": "The cat sat on a mat. " * 20, "meta": {"set": "verse"}}) + "\n")
        f.write(json.dumps({"text": "the cat sat on a mat " * 20, "meta": {"set": "story"}}) + "\n")
    local = {key: value for key, value in ray_cluster.items() if key != "RAY_ADDRESS"}
    outs = {}
    for kind, env in (("local", local), ("ray", ray_cluster)):
        m = run_languini(env, "data", "prepare", corpus, "--out", tmp_path / f"data-{kind}", "--vocab-size", 300,
                     "--domain-field", "meta.set", "--workers", 2, "--executor", kind)
        d = run_languini(env, "data", "dedup", tmp_path / f"data-{kind}", "--out", tmp_path / f"dedup-{kind}", "--decontaminate",
                     "--memory-limit", "64M", "--workers", 2, "--executor", kind)
        outs[kind] = (m["fingerprint"], d["fingerprint"], list(read_duplicates(d["out"])), d["total"])
    assert outs["ray"] == outs["local"]
    assert outs["local"][3]["exact"] >= 1 and outs["local"][3]["cross_domain"] >= 1  # dedup found the planted copies
