"""An autoscaling Ray cluster on this machine: cluster/fake-multinode.yaml under Ray's fake provider.

The head runs `ray start --head --block` in its own process group, on free ports, in its own temp
dir; the autoscaler (a process of the head) starts the fake worker nodes in that same group. Ending
the group stops exactly this cluster, worker nodes included: nothing broader (no `ray stop`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.conftest import ROOT, env_with_venv
from tests.reliability.sweeps import Job

FAKE_YAML = ROOT / "cluster" / "fake-multinode.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FakeCluster:
    ray_bin: str
    address: str  # the dashboard / job API, http://127.0.0.1:PORT
    gcs: str  # host:port of the GCS (ray.init(address=...))
    env: dict
    pgid: int

    def nodes(self) -> list[dict]:
        """The cluster's alive nodes (node_id, resources, is_head_node), from Ray's state API."""
        from ray.util.state import list_nodes

        return [
            {"node_id": n.node_id, "resources": n.resources_total, "head": n.is_head_node}
            for n in list_nodes(address=self.address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
        ]

    def actors(self, class_prefix: str, state: str | None = None) -> list:
        """The cluster's actors (alive or dead) whose class name starts with `class_prefix`."""
        from ray.util.state import list_actors

        filters = [("state", "=", state)] if state else []
        found = list_actors(address=self.address, filters=filters, detail=True, limit=10000, raise_on_missing_output=False)
        return [a for a in found if a.class_name.startswith(class_prefix)]

    def raylet_pid(self, node_id: str) -> int:
        """The pid of a node's raylet, a process of this cluster's group started with --node_id=<id>."""
        import psutil

        for proc in psutil.Process(self.pgid).children(recursive=True):
            try:
                cmd = proc.cmdline()
            except psutil.Error:
                continue
            if cmd and cmd[0].endswith("raylet") and f"--node_id={node_id}" in cmd:
                return proc.pid
        raise LookupError(f"no raylet process for node {node_id}")


def wait_until(predicate, timeout: float, what: str, interval: float = 1.0):
    """Poll `predicate` until it returns something truthy (returned); AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextmanager
def fake_cluster(tmp_path: Path, declared_gpus: int, env_overrides: dict | None = None):
    import ray._private.services as services

    ray_bin = str(Path(sys.executable).parent / "ray")
    gcs, dashboard, client, agent = (free_port() for _ in range(4))
    ip = services.get_node_ip_address()
    config = yaml.safe_load(FAKE_YAML.read_text())
    config["provider"]["gcs_address"] = f"{ip}:{gcs}"  # the fake nodes join this head, not port 6379
    config_path = tmp_path / "fake-multinode.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = env_with_venv()
    env.update({
        "RAY_FAKE_CLUSTER": "1",
        "RAY_AUTH_MODE": "disabled",  # a private single-machine test cluster
        "PARETORL_CLUSTER_GPUS": str(declared_gpus),  # what the cluster scales to, as cluster/aws.yaml declares it
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        **(env_overrides or {}),
    })
    temp_dir = Path("/tmp") / f"rfc-{os.getpid()}-{gcs}"  # short: Ray's socket paths have a length limit
    proc = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=0", f"--autoscaling-config={config_path}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
         "--min-worker-port=0", "--max-worker-port=0", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    cluster = FakeCluster(ray_bin, f"http://127.0.0.1:{dashboard}", f"{ip}:{gcs}", env, proc.pid)
    try:
        def job_api_up():
            if proc.poll() is not None:
                raise AssertionError(f"ray head exited: {proc.stdout.read()[-3000:]}")
            return subprocess.run([ray_bin, "job", "list", "--address", cluster.address], env=env, capture_output=True).returncode == 0

        wait_until(job_api_up, 180, "the head's job API", interval=2)
        yield cluster
    finally:
        # the cluster's logs outlive it, beside the test's other files (the Ray temp dir is removed)
        shutil.copytree(temp_dir / "session_latest" / "logs", tmp_path / "ray-logs", symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.sock", "events", "export_events"))
        os.killpg(proc.pid, signal.SIGTERM)  # --block stops the head's processes; the group holds the fake workers too
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group outlived the head
        except ProcessLookupError:
            pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(cluster: FakeCluster, args: list[str], cwd: Path) -> Job:
    """`ray job submit -- python jobs/sweep.py ARGS` from `cwd`, in the background.

    Without --working-dir: the fake nodes share this machine's session directory, so a working_dir
    package unpacked again by a newly started node's agent would be replaced under the running
    job. The code is on the shared file system instead (as cluster/aws.yaml syncs it to every node).
    Right after `ray start` the head's dashboard agent may still be registering ("No available
    agent to submit job"); nothing starts then, so that refusal is retried.
    """
    import shlex

    entrypoint = f"cd {shlex.quote(str(cwd))} && python {shlex.quote(str(ROOT / 'jobs' / 'sweep.py'))} {shlex.join(args)}"
    command = [cluster.ray_bin, "job", "submit", "--address", cluster.address, "--", "bash", "-c", entrypoint]
    deadline = time.monotonic() + 120
    while True:
        job = Job([], ROOT, command=command, env=cluster.env)
        first = job.wait_for(lambda line: True, 120)
        if "No available agent" not in first:
            return job
        job.finish(timeout=60)
        if time.monotonic() > deadline:
            raise AssertionError(first)
        time.sleep(3)
