"""A real local Ray cluster for tests: ``ray start --head`` plus a second node process, each with
its own resources and its own archiver state dir ("two hosts" on one machine).

Everything stays on loopback: Ray turns ``127.0.0.1`` into the machine's outward address, so
the head listens as ``127.0.0.2`` and the second node as ``127.0.0.3`` (both loopback). Token
authentication is on, with a fresh token per cluster. Each ``ray start --block`` runs in its own
session, so stopping the cluster kills exactly the processes of its sessions (every Ray daemon and
worker of that node — workers get process groups of their own, but stay in the session), never
another Ray on the machine: the cleanup ``ray stop`` would do, but scoped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD_IP, NODE_IP = "127.0.0.2", "127.0.0.3"
REPO = str(Path(__file__).resolve().parent.parent)


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class RayCluster:
    def __init__(self, homes: dict[str, Path], *, cpus_per_node: int = 1,
                 node_env: dict[str, dict[str, str]] | None = None):
        """``node_env``: extra environment for one node's Ray processes (its workers inherit it)."""
        self.tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # Ray's socket paths must stay short
        self.port = _free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"
        self.cpus = cpus_per_node
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
                        RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_ADDRESS=self.address,
                        PYTHONPATH=os.pathsep.join([REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        self.env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        self.homes = homes
        self.node_env = node_env or {}
        self.nodes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    # -- start / stop ------------------------------------------------------------------------
    def _start(self, name: str, args: list[str]) -> None:
        log = Path(self.tmp) / f"{name}.out"
        self.logs[name] = log
        env = dict(self.env, ARCHIVER_HOME=str(self.homes[name]), **self.node_env.get(name, {}))
        with open(log, "wb") as f:
            self.nodes[name] = subprocess.Popen(
                [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
                 f"--num-cpus={self.cpus}", "--num-gpus=0", f"--resources={json.dumps({name: 1})}",
                 f"--temp-dir={self.tmp}",
                 f"--dashboard-agent-listen-port={_free_port('127.0.0.1')}",
                 f"--dashboard-agent-grpc-port={_free_port('127.0.0.1')}",
                 f"--metrics-export-port={_free_port('127.0.0.1')}",
                 f"--runtime-env-agent-port={_free_port('127.0.0.1')}", *args],
                stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.tmp)
        deadline = time.time() + 120
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if self.nodes[name].poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ray node {name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def start(self, n_nodes: int = 2) -> "RayCluster":
        try:
            self._start("head", ["--head", f"--node-ip-address={HEAD_IP}", f"--port={self.port}",
                                 "--include-dashboard=false"])
            if n_nodes > 1:
                self._start("node2", [f"--address={self.address}", f"--node-ip-address={NODE_IP}"])
            self.wait_nodes(n_nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_nodes(self, n: int, timeout: float = 120) -> None:
        code = ("import ray, time, sys\n"
                "ray.init(log_to_driver=False)\n"
                "t = time.time() + float(sys.argv[2])\n"
                "while len([x for x in ray.nodes() if x['Alive']]) < int(sys.argv[1]) and time.time() < t:\n"
                "    time.sleep(0.2)\n"
                "print(len([x for x in ray.nodes() if x['Alive']]))\n")
        r = subprocess.run([sys.executable, "-c", code, str(n), str(timeout)], env=self.env, capture_output=True,
                           text=True, timeout=timeout + 60, cwd=self.tmp)
        if r.returncode != 0 or r.stdout.strip().splitlines()[-1:] != [str(n)]:
            raise RuntimeError(f"ray cluster has not {n} nodes: {r.stdout[-500:]} {r.stderr[-2000:]}")

    def stop(self) -> None:
        for p in self.nodes.values():
            _kill_session(p.pid, signal.SIGTERM)
        deadline = time.time() + 4
        for p in self.nodes.values():
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            _kill_session(p.pid, signal.SIGKILL)  # whatever of that node is left (raylet, workers, agents)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- inspection --------------------------------------------------------------------------
    def task_processes(self, name: str, title: str = "ray::run_task") -> list[int]:
        """Pids of node ``name``'s worker processes currently running ``title``."""
        out = []
        for pid in _session(self.nodes[name].pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(title):
                out.append(pid)
        return out


def _session(sid: int) -> list[int]:
    """The pids in session ``sid`` (the ``ray start`` process we started leads it)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getsid(int(d)) == sid:
                    out.append(int(d))
            except (ProcessLookupError, PermissionError):
                continue
    return out


def _kill_session(sid: int, sig: int) -> None:
    for pid in _session(sid):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
