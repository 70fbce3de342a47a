"""A sweep whose every file lives on object storage: `--output-dir s3://...` and `--cache-dir s3://...`
against a local S3 server (moto's, on 127.0.0.1 and a free port), killed mid-trial and resumed
from the store.

Shows: the splits, the base policy and its evaluation, Tune's and Train's storage, the checkpoints
and the front's links to them, the sweep's records and MLflow's artifacts all land in the bucket;
the trials read the base policy from it; `--resume s3://...` continues the trial from its
checkpoint with no gap and no repeat in MLflow; nothing is written to a local sweep folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.sweeps import Job, tiny_space

BUCKET = "paretorl-test"
STEPS = 4


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's S3 server in its own process group; yields the environment that points jobs at it."""
    from tests.cluster.fake_cluster import free_port, wait_until

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",  # MLflow's own name for it (boto3 also reads the first)
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # this process reads the bucket too (boto3, pyarrow)
    try:
        import boto3

        def bucket_made():
            try:
                boto3.client("s3").create_bucket(Bucket=BUCKET)
                return True
            except Exception:  # the server is still starting
                return False

        wait_until(bucket_made, 60, "moto's S3 server", interval=0.5)
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def keys(prefix: str) -> list[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="module")
def s3_sweep(s3_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3-sweep")
    space = tiny_space(tmp / "space.yaml", params={"algo.objective": {"type": "categorical", "choices": ["grpo", "maxrl"]}},
                       initial_points=[{"algo.objective": "grpo"}], trials=1, max_concurrent=1, steps=STEPS)
    local = tmp / "local"  # node-local copies of what the trials read from the store
    os.environ["PARETORL_LOCAL_CACHE"] = str(local)  # inherited by the jobs (tests.conftest.env_with_venv)
    try:
        args = ["--space", str(space), "--name", "s3sweep", "--output-dir", f"s3://{BUCKET}/runs", "--cache-dir", f"s3://{BUCKET}/cache",
                "--mlflow-uri", f"sqlite:///{tmp / 'mlflow.db'}"]
        job = Job(args, tmp)
        trial = job.wait_for(lambda line: line.startswith("[eval] trial") and " step 2:" in line, 600).split()[2]
        os.killpg(job.proc.pid, signal.SIGKILL)  # the job and its local Ray die together
        job.proc.wait(timeout=60)
        resumed = Job(["--resume", f"s3://{BUCKET}/runs/s3sweep"], tmp)
        rc = resumed.finish(timeout=900)
    finally:
        os.environ.pop("PARETORL_LOCAL_CACHE")
    return {"tmp": tmp, "trial": trial, "rc": rc, "output": resumed.output, "first": job.output, "local": local}


def test_s3_sweep_resumes_from_the_store_without_gap_or_repeat(s3_sweep):
    from tests.jobs.test_sweep_job import mlflow_runs

    assert s3_sweep["rc"] == 0, s3_sweep["output"][-4000:]
    assert f"[trial] {s3_sweep['trial']} resumed" in s3_sweep["output"]
    client, parents, children = mlflow_runs(s3_sweep["tmp"] / "mlflow.db")
    assert len(parents) == 1 and len(children) == 1 and children[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(children[0].info.run_id, "train/reward_mean")]
    assert steps == list(range(1, STEPS + 1))
    restored = [m.value for m in client.get_metric_history(children[0].info.run_id, "train/restored_from_step")]
    assert max(restored) >= 2  # the resumed trial continued from a checkpoint read back from the store
    assert not (s3_sweep["tmp"] / "runs").exists() and not (s3_sweep["tmp"] / "s3:").exists()  # no local sweep folder
    flat = " ".join(s3_sweep["output"].split())
    assert "test split:" in flat and "no checkpoint at" not in flat  # the test report ran, finding every front checkpoint


def test_s3_sweep_files_checkpoints_and_front_links_are_in_the_bucket(s3_sweep):
    from paretorl import storage

    sweep = "runs/s3sweep/"
    stored = keys(sweep)
    for name in ("sweep.json", "trials_state.json", "data/train.parquet", "data/eval.parquet", "data/test.parquet", "data/meta.json"):
        assert sweep + name in stored, name
    assert any(k.startswith(sweep + "tune/s3sweep/experiment_state") for k in stored)  # Tune's state, which --resume read
    checkpoints = {k.rsplit("/", 1)[0] for k in stored if k.startswith(sweep + "ray/") and k.endswith("/model.safetensors")}
    assert checkpoints
    state = json.loads(storage.read_text(f"s3://{BUCKET}/{sweep}trials_state.json"))
    links = [p["checkpoint"] for p in state["points"] if p.get("checkpoint")]
    assert links and all(link.startswith(f"s3://{BUCKET}/{sweep}ray/") for link in links)  # the front's links
    assert {link[len(f"s3://{BUCKET}/"):] for link in links} <= checkpoints  # and they point at stored checkpoints


def test_s3_checkpoint_links_serve_the_test_report(s3_sweep, tmp_path, monkeypatch):
    """What the test report does with a front point: sample its stored checkpoint, cache beside it."""
    from paretorl import storage
    from paretorl.config import EvalConfig
    from paretorl.evaluate.on_test import evaluate_on_test
    from paretorl.tasks import load_task, read_rows
    from tests.conftest import COIN_TASK

    monkeypatch.setenv(storage.LOCAL_CACHE_ENV, str(tmp_path))
    state = json.loads(storage.read_text(f"s3://{BUCKET}/runs/s3sweep/trials_state.json"))
    link = next(p["checkpoint"] for p in state["points"] if p.get("checkpoint"))
    rows = read_rows(f"s3://{BUCKET}/runs/s3sweep/data/test.parquet")[:4]
    got = evaluate_on_test(link, rows, EvalConfig(max_new_tokens=16), load_task(COIN_TASK), n_samples=2, seed=0)
    assert got.correct.shape == (4, 2)
    assert any(k.rsplit("/", 1)[-1].startswith("test_eval-") for k in keys(link[len(f"s3://{BUCKET}/"):] + "/"))


def test_s3_base_policy_is_cached_in_the_bucket_and_read_from_it(s3_sweep):
    cached = keys("cache/")
    bases = {k.split("/")[1] for k in cached if k.endswith("/paretorl_base.json")}
    assert len(bases) == 1
    (base,) = bases
    assert f"cache/{base}/model.safetensors" in cached
    assert any(k.startswith(f"cache/{base}/base_eval-") for k in cached)  # the base policy's evaluation, cached beside it
    copies = list((s3_sweep["local"] / "downloads").glob("*/paretorl_base.json"))
    assert copies and all((c.parent / "model.safetensors").is_file() for c in copies)  # trials copied it from the store
    assert "base policy: cached at" in s3_sweep["output"]  # the resumed job found it in the bucket


def test_s3_mlflow_artifacts_go_to_the_same_store(s3_sweep):
    from tests.jobs.test_sweep_job import mlflow_runs

    client, parents, children = mlflow_runs(s3_sweep["tmp"] / "mlflow.db")
    location = client.get_experiment(parents[0].info.experiment_id).artifact_location
    assert location == f"s3://{BUCKET}/runs/mlartifacts/paretorl"
    artifacts = keys("runs/mlartifacts/paretorl/")
    assert any(k.endswith("/pareto_front.csv") for k in artifacts)
    assert any(k.endswith("/coverage_curve.png") for k in artifacts)


# --- the storage helper on its own, against the same server (seconds) --------------------------
def test_s3_paths_read_write_and_emptiness(s3_server, tmp_path):
    from paretorl import storage

    root = f"s3://{BUCKET}/unit/{tmp_path.name}"
    assert storage.is_uri(root) and not storage.is_uri(tmp_path) and not storage.is_uri("file:///x")
    assert storage.resolve(root + "/") == root and storage.join(root, "a", "b.json") == f"{root}/a/b.json"
    assert storage.resolve("rel/dir") == str((Path.cwd() / "rel" / "dir").resolve())
    assert storage.is_empty(root) and not storage.exists(f"{root}/a/b.json")
    storage.write_text(f"{root}/a/b.json", '{"x": 1}')
    assert storage.exists(f"{root}/a/b.json") and storage.read_text(f"{root}/a/b.json") == '{"x": 1}'
    assert not storage.is_empty(root)
    assert storage.in_store_of(root, f"{BUCKET}/unit/ckpt") == f"s3://{BUCKET}/unit/ckpt"  # as Ray reports checkpoint paths
    assert storage.in_store_of(str(tmp_path), "/local/ckpt") == "/local/ckpt"


def test_s3_local_copy_downloads_only_what_changed(s3_server, tmp_path, monkeypatch):
    from paretorl import storage

    monkeypatch.setenv(storage.LOCAL_CACHE_ENV, str(tmp_path / "local"))
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"1234")
    uri = f"s3://{BUCKET}/unit/{tmp_path.name}/model"
    storage.upload(src, uri, last="config.json")
    copy = storage.local_copy(uri)
    assert (copy / "config.json").read_text() == "{}" and (copy / "sub" / "w.bin").read_bytes() == b"1234"
    untouched = (copy / "config.json").stat().st_ino
    storage.write_text(f"{uri}/sub/w.bin", "56789")  # changed in the store
    assert storage.local_copy(uri) == copy
    assert (copy / "sub" / "w.bin").read_text() == "56789"
    assert (copy / "config.json").stat().st_ino == untouched  # not downloaded again
    with pytest.raises(FileNotFoundError, match="no files"):
        storage.local_copy(f"s3://{BUCKET}/unit/{tmp_path.name}/missing")


def test_s3_cached_dir_builds_once_in_a_temporary_folder(s3_server, tmp_path):
    from paretorl import storage

    builds = []

    def build(out):
        builds.append(out)
        out.mkdir(parents=True)
        (out / "weights").write_text("w")
        (out / "done.json").write_text("{}")
        return "built"

    cache, logs = f"s3://{BUCKET}/unit/{tmp_path.name}/cache", []
    for _ in range(2):
        assert storage.cached_dir(cache, "base-1", build, marker="done.json", label="entry", log=logs.append) == f"{cache}/base-1"
    assert len(builds) == 1 and not builds[0].exists()  # built once, in a temporary folder
    assert logs == [f"built, saved to {cache}/base-1", f"entry cached at {cache}/base-1"]
    assert storage.read_text(f"{cache}/base-1/weights") == "w"
