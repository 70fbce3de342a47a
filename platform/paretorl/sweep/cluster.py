"""Sizing a sweep to the cluster it runs on: `budget.max_concurrent: auto`.

A trial holds GPUs in two places: its Ray Train learner workers and its rollout replicas.
`auto` runs as many trials at once as the cluster's GPUs hold:
floor(cluster GPUs / GPUs per trial).

"GPU" is the Ray resource `resources.accelerator` names: GPU, or a custom resource that stands in
for one (the fake multi-node cluster's `fake_gpu`); every count here is in units of it.

An autoscaling cluster starts with no GPU worker at all, so `ray.cluster_resources()` alone
would say 0: the GPUs the cluster can scale to are read from `PARETORL_CLUSTER_GPUS`, which
the cluster files in cluster/ set on the head (max GPU workers x GPUs per worker).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from paretorl.config import TrialConfig

CLUSTER_GPUS_ENV = "PARETORL_CLUSTER_GPUS"

# Tune's trial drivers run on the head, which every Ray cluster marks with this resource, and hold
# no CPU there (the head offers none to trials). Ray Train attaches a trial's controller to its
# driver's node, so a worker node lost mid-trial costs the trial a retry from its checkpoint
# (resources.max_failures), not the trial.
TRIAL_DRIVER_RESOURCES = {"cpu": 0, "node:__internal_head__": 0.001}


def gpus_per_trial(cfg: TrialConfig) -> float:
    """GPUs one trial holds: learner workers x GPUs each + rollout replicas x GPUs each.

    A vLLM replica with tensor parallelism spans `tensor_parallel_size` GPUs, each taking
    `rollout.num_gpus`; an autoscaled rollout app is counted at its `max_replicas`.
    """
    learner = cfg.resources.learner_workers * cfg.resources.learner_gpus
    replicas = cfg.rollout.autoscaling.get("max_replicas", cfg.rollout.replicas) if cfg.rollout.autoscaling else cfg.rollout.replicas
    tp = cfg.rollout.vllm.tensor_parallel_size if cfg.rollout.engine == "vllm" else 1
    return learner + replicas * cfg.rollout.num_gpus * tp


def shares_a_gpu(cfg: TrialConfig) -> bool:
    """Whether a trial's learner and rollout replica may land on one GPU: each takes a fraction of one.

    Such a trial starts its learner only once the replica runs: vLLM counts any change of the GPU's
    free memory during its start-up profiling as its own (profiles/gpu-1.yaml).
    """
    return 0 < cfg.resources.learner_gpus < 1 and 0 < cfg.rollout.num_gpus < 1


def cluster_gpus(resources: Mapping[str, float], env: Mapping[str, str] = os.environ, accelerator: str = "GPU") -> float:
    """The GPUs (units of `accelerator`) the sweep may count on: the most of those present now and `PARETORL_CLUSTER_GPUS`."""
    declared = env.get(CLUSTER_GPUS_ENV, "").strip()
    try:
        declared_gpus = float(declared) if declared else 0.0
    except ValueError:
        raise ValueError(f"${CLUSTER_GPUS_ENV} must be a number of GPUs, got {declared!r}") from None
    if declared_gpus < 0:
        raise ValueError(f"${CLUSTER_GPUS_ENV} must be >= 0, got {declared!r}")
    return max(float(resources.get(accelerator, 0.0)), declared_gpus)


def auto_max_concurrent(per_trial: float, available: float, accelerator: str = "GPU") -> int:
    """floor(available / per_trial); refuses trials without GPUs and clusters too small for one trial."""
    if per_trial <= 0:
        raise ValueError(
            "budget.max_concurrent: auto sizes the sweep by GPUs, but a trial uses none "
            "(resources.learner_gpus and rollout.num_gpus are 0); give max_concurrent a number"
        )
    if available < per_trial:
        raise ValueError(
            f"budget.max_concurrent: auto: one trial needs {per_trial:g} {'GPUs' if accelerator == 'GPU' else accelerator}, the cluster has {available:g} "
            f"(an autoscaling cluster that starts without GPU workers: set ${CLUSTER_GPUS_ENV} to the GPUs it scales to)"
        )
    return int(math.floor(available / per_trial + 1e-9))


def resolve_max_concurrent(budget_value, cfg: TrialConfig, resources: Mapping[str, float], env: Mapping[str, str] = os.environ) -> int:
    """The number of trials to run at once: `budget.max_concurrent` itself, or `auto` worked out."""
    if budget_value != "auto":
        return int(budget_value)
    accelerator = cfg.resources.accelerator
    return auto_max_concurrent(gpus_per_trial(cfg), cluster_gpus(resources, env, accelerator), accelerator)
