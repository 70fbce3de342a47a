"""Machine profiles (profiles/*.yaml): each renders a valid trial config over the default space;
`budget.max_concurrent: auto` and `tracking:` resolve as documented. No Ray is started."""

from __future__ import annotations

import pytest

from paretorl.config import TrialConfig
from paretorl.sweep.cluster import CLUSTER_GPUS_ENV, auto_max_concurrent, cluster_gpus, gpus_per_trial, resolve_max_concurrent
from paretorl.sweep.profiles import ProfileError, available, load_profile, read_profile, tracking_settings
from paretorl.search.space import load_space
from tests.conftest import ROOT

DEFAULT_SPACE = ROOT / "searchspaces" / "default.yaml"


@pytest.mark.parametrize("name", available())
def test_every_profile_renders_a_valid_trial_config(name):
    space = load_space(DEFAULT_SPACE, load_profile(name))  # the same validation as the CPU default: every corner
    cfg = space.trial_config({k: spec.corners()[0] for k, spec in space.params.items()})
    assert isinstance(cfg, TrialConfig)
    if space.budget.max_concurrent == "auto":
        assert gpus_per_trial(cfg) > 0, f"{name}: max_concurrent auto needs trials that use GPUs"


def test_gpu_profiles_put_vllm_and_deepspeed_on_gpus():
    gpu = load_space(DEFAULT_SPACE, load_profile("gpu")).trial_config({})
    assert gpu.rollout.engine == "vllm" and gpu.rollout.num_gpus == 1 and gpu.rollout.vllm.gpu_memory_utilization > 0.5
    assert (gpu.train.zero_stage, gpu.train.bf16, gpu.resources.learner_gpus) == (2, True, 1)
    assert gpus_per_trial(gpu) == 2
    zero3 = load_space(DEFAULT_SPACE, load_profile("gpu-zero3")).trial_config({})
    assert (zero3.train.zero_stage, zero3.train.bf16, zero3.train.activation_checkpointing) == (3, True, True)
    assert gpus_per_trial(zero3) == 3  # 2 learner GPUs + 1 replica
    for name in ("gpu", "gpu-zero3"):
        assert read_profile(name).budget["max_concurrent"] == "auto"


# --- budget.max_concurrent: auto --------------------------------------------------------------
def trial(**tree) -> TrialConfig:
    return TrialConfig.model_validate(tree)


def test_gpus_per_trial_counts_learners_replicas_and_tensor_parallel_ranks():
    cfg = trial(resources={"learner_workers": 2, "learner_gpus": 1},
                rollout={"engine": "vllm", "replicas": 3, "num_gpus": 1, "vllm": {"tensor_parallel_size": 2}})
    assert gpus_per_trial(cfg) == 2 * 1 + 3 * 1 * 2
    shared = trial(resources={"learner_gpus": 0.5}, rollout={"engine": "vllm", "replicas": 2, "num_gpus": 0.25})
    assert gpus_per_trial(shared) == 0.5 + 2 * 0.25
    autoscaled = trial(rollout={"num_gpus": 1, "autoscaling": {"min_replicas": 1, "max_replicas": 4}})
    assert gpus_per_trial(autoscaled) == 4
    assert gpus_per_trial(trial()) == 0  # the CPU default


def test_auto_concurrency_is_the_floor_of_cluster_gpus_over_trial_gpus():
    assert auto_max_concurrent(2, 16) == 8
    assert auto_max_concurrent(3, 16) == 5
    assert auto_max_concurrent(0.5, 3) == 6
    assert auto_max_concurrent(1.5, 3) == 2


def test_auto_concurrency_refuses_cpu_trials_and_too_small_clusters():
    with pytest.raises(ValueError, match="uses none"):
        auto_max_concurrent(0, 8)
    with pytest.raises(ValueError, match="needs 3 GPUs, the cluster has 2"):
        auto_max_concurrent(3, 2)


def test_cluster_gpus_counts_an_autoscaling_cluster_at_its_declared_size():
    assert cluster_gpus({"CPU": 8}, {}) == 0
    assert cluster_gpus({"CPU": 8}, {CLUSTER_GPUS_ENV: "16"}) == 16  # no GPU node up yet
    assert cluster_gpus({"GPU": 24}, {CLUSTER_GPUS_ENV: "16"}) == 24  # more than declared is up
    with pytest.raises(ValueError, match=CLUSTER_GPUS_ENV):
        cluster_gpus({}, {CLUSTER_GPUS_ENV: "sixteen"})


def test_resolve_max_concurrent():
    cfg = load_space(DEFAULT_SPACE, load_profile("gpu")).trial_config({})
    assert resolve_max_concurrent("auto", cfg, {"CPU": 0.0}, {CLUSTER_GPUS_ENV: "16"}) == 8
    assert resolve_max_concurrent(3, cfg, {}, {}) == 3


def test_budget_accepts_auto_and_refuses_other_words(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: {max_concurrent: lots}\n")
    from paretorl.search.space import SpaceError

    with pytest.raises(SpaceError, match="budget.max_concurrent"):
        load_space(DEFAULT_SPACE, load_profile(str(bad)))


# --- tracking: ----------------------------------------------------------------------------------
def test_tracking_reads_the_environment():
    env = {"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000", "PARETORL_ARTIFACT_LOCATION": "s3://bucket/paretorl"}
    assert tracking_settings("gpu", env=env) == {"uri": "http://mlflow.internal:5000", "artifact_location": "s3://bucket/paretorl"}
    # an empty default means "not set": the server's default artifact root
    assert tracking_settings("gpu", env={"MLFLOW_TRACKING_URI": "http://m:5000"})["artifact_location"] is None


def test_tracking_without_its_server_is_refused_unless_the_cli_names_one():
    with pytest.raises(ProfileError, match=r"gpu.yaml: tracking.uri: environment variable MLFLOW_TRACKING_URI is not set"):
        tracking_settings("gpu", env={})
    assert tracking_settings("gpu", cli_uri="http://cli:5000", env={})["uri"] == "http://cli:5000"
    assert tracking_settings("cpu", env={}) == {"uri": None, "artifact_location": None}


def test_sweep_job_refuses_before_ray_starts(tmp_path, monkeypatch, capsys):
    from jobs import sweep

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert sweep.main(["--profile", "gpu", "--output-dir", str(tmp_path)]) == 2
    assert "tracking.uri: environment variable MLFLOW_TRACKING_URI is not set" in capsys.readouterr().err
    cpu_auto = tmp_path / "cpu-auto.yaml"
    cpu_auto.write_text("budget: {max_concurrent: auto}\n")
    assert sweep.main(["--profile", str(cpu_auto), "--output-dir", str(tmp_path)]) == 2
    assert "a trial uses no GPUs" in capsys.readouterr().err
    assert not any(tmp_path.glob("*/data"))  # nothing was prepared


def test_a_profiles_artifact_location_is_where_a_new_experiment_keeps_artifacts(tmp_path):
    from mlflow import MlflowClient

    from paretorl.report.tracking import ensure_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    store = (tmp_path / "artifact-store").as_uri()  # stands in for s3://bucket/paretorl
    exp_id = ensure_experiment(client, "paretorl", uri, store)
    assert client.get_experiment(exp_id).artifact_location == store
    assert ensure_experiment(client, "paretorl", uri, "file:///elsewhere") == exp_id  # an existing one is kept
    default_id = ensure_experiment(client, "other", uri)
    assert client.get_experiment(default_id).artifact_location.endswith("mlartifacts/other")


def test_the_one_gpu_profile_runs_a_trial_per_gpu_learner_and_replica_sharing_it():
    from paretorl.sweep.cluster import shares_a_gpu

    cfg = load_space(DEFAULT_SPACE, load_profile("gpu-1")).trial_config({})
    assert (cfg.rollout.engine, cfg.train.bf16, cfg.resources.accelerator) == ("vllm", True, "GPU")
    assert gpus_per_trial(cfg) == 1
    assert resolve_max_concurrent("auto", cfg, {"GPU": 1.0}, {}) == 1
    assert resolve_max_concurrent("auto", cfg, {"GPU": 4.0}, {}) == 4
    # the learner keeps the GPU memory vLLM does not take: the arithmetic in profiles/gpu-1.yaml
    assert cfg.rollout.vllm.gpu_memory_utilization <= 0.5 and cfg.train.max_tokens_per_micro_batch
    assert shares_a_gpu(cfg)  # so the trial starts its learner after the replica (vLLM's memory profiling)
    assert not shares_a_gpu(load_space(DEFAULT_SPACE, load_profile("gpu")).trial_config({}))
