"""The rollout section of the trial config: engine names, Serve autoscaling, the cpu-vllm profile."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from paretorl.config import RolloutConfig, TrialConfig
from paretorl.sweep.profiles import load_profile


def test_autoscaling_is_checked_as_serve_reads_it():
    cfg = RolloutConfig(autoscaling={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 1})
    assert cfg.autoscaling["max_replicas"] == 4
    with pytest.raises(ValidationError, match=r"unknown rollout.autoscaling keys \['min_replica'\]; valid: .*min_replicas"):
        RolloutConfig(autoscaling={"min_replica": 1})  # Serve itself would ignore the typo
    with pytest.raises(ValidationError, match="must be greater than or equal to min_replicas"):
        RolloutConfig(autoscaling={"min_replicas": 3, "max_replicas": 1})


def test_engine_names_are_refused_with_the_valid_ones():
    with pytest.raises(ValidationError, match="unknown rollout engine 'vllm-cpu'; valid: embedded, vllm"):
        RolloutConfig(engine="vllm-cpu")


def test_the_cpu_vllm_profile_picks_the_vllm_engine():
    trial = TrialConfig.model_validate(load_profile("cpu-vllm")["trial"])
    assert trial.rollout.engine == "vllm" and trial.rollout.num_gpus == 0
    assert trial.rollout.vllm.kv_cache_space_gib > 0


def test_a_tensor_parallel_replica_reserves_a_gpu_per_rank():
    """vLLM runs its ranks inside the replica's actor and needs as many GPUs visible there."""
    from ray import serve

    from paretorl.rollout.serve import RolloutServer, replica_resources

    tp2 = RolloutConfig(engine="vllm", num_cpus=2, num_gpus=1, vllm={"tensor_parallel_size": 2})
    assert replica_resources(tp2) == {"num_cpus": 2, "num_gpus": 2}
    assert replica_resources(tp2, "fake_gpu") == {"num_cpus": 2, "resources": {"fake_gpu": 2}}
    one = RolloutConfig(engine="vllm", num_gpus=0.5)
    assert replica_resources(one) == {"num_cpus": 0.4, "num_gpus": 0.5}  # a share of one GPU, as before
    assert replica_resources(RolloutConfig(num_gpus=1, vllm={"tensor_parallel_size": 2})) == {"num_cpus": 0.4, "num_gpus": 1}  # embedded: no ranks
    deployment = serve.deployment(RolloutServer, ray_actor_options=replica_resources(tp2))  # Serve accepts what start_rollout_app passes
    assert deployment.ray_actor_options["num_gpus"] == 2
    with pytest.raises(ValidationError, match=r"tensor_parallel_size > 1 needs rollout.num_gpus 1"):
        RolloutConfig(engine="vllm", num_gpus=0.5, vllm={"tensor_parallel_size": 2})
