"""One Tune trial: its rollout Serve app + weight registry, and a Ray Train TorchTrainer.

Ray 2.60 (Train V2): Tune's trainable is a function that calls `TorchTrainer(...).fit()`;
`TuneReportCallback` forwards every `ray.train.report` to Tune.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import wait

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from paretorl.config import TrialConfig, deep_merge, set_path


REPORT_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"  # Ray Train V2: the controller's poll of its workers


def trial_tree(sampled: dict, base: dict) -> dict:
    """The trial's full config tree: the space's fixed `trial` section plus the sampled values."""
    tree = deep_merge(base, {})
    for key, value in sampled.items():
        set_path(tree, key, value)
    return tree


def evaluations(cfg: TrialConfig) -> int:
    """How many evaluations a trial makes: every `eval.every` steps and after the last."""
    return cfg.train.steps // cfg.eval.every + (1 if cfg.train.steps % cfg.eval.every else 0)


def prompt_dataset(path: str):
    """The training split (a local path or an s3:// URI) as a Ray Dataset, streamed to the learner
    with `iter_batches`.

    Read with pyarrow here (a few MB at most) and made a dataset with `from_blocks`, which computes
    the block's metadata in this process. `read_parquet` and `from_arrow` run a task for it, and a
    task asks for a whole free CPU: a trial started next to a running one (0.8 of 2 CPUs each,
    its own replica already up) found 0.8 free and waited until the other trial ended, so the
    sweep ran its trials one after the other.
    """
    import pyarrow.parquet as pq

    from paretorl import storage

    fs, inner = storage.filesystem(path)
    return ray.data.from_blocks([pq.read_table(inner, filesystem=fs)])


def learner_resources(cfg: TrialConfig) -> tuple[bool, dict]:
    """(use_gpu, Ray resources per learner worker): its CPUs and its share of `resources.accelerator`.

    A custom accelerator resource (a stand-in for GPUs, e.g. the fake cluster's fake_gpu) schedules
    the learner like a GPU one and runs it on CPU.
    """
    r = cfg.resources
    if not r.learner_gpus:
        return False, {"CPU": r.learner_cpus}
    return r.accelerator == "GPU", {"CPU": r.learner_cpus, r.accelerator: r.learner_gpus}


class ReportWithURIs(TuneReportCallback):
    """Ray Train -> Tune reports, with checkpoint paths as URIs the front can link to.

    Ray reports a checkpoint's path inside its storage filesystem (`bucket/prefix/...` for S3):
    the scheme of the trial's storage is put back, so links and `--resume` read the right store.
    """

    def __init__(self, storage_path: str):
        super().__init__()
        self._storage_path = storage_path

    def after_report(self, run_context, metrics, checkpoint):
        from paretorl import storage

        metrics = [dict(m) for m in metrics]
        path = checkpoint.path if checkpoint else metrics[0].get("checkpoint_path")
        if path:
            metrics[0]["checkpoint_path"] = storage.in_store_of(self._storage_path, path)
        super().after_report(run_context, metrics, None)


def rollout_app_name(trial_id: str) -> str:
    return f"paretorl-rollout-{trial_id}"


class ReleaseTrialApps(tune.Callback):
    """Deletes an ended trial's rollout Serve app if it is still deployed.

    `run_trial` deletes it in its `finally`, but a trial that Tune stops (a scheduler's STOP, a
    spent CPU budget) has its actor ended without that `finally` running; Serve apps outlive
    their creator, and the replicas would keep their reserved CPUs for the rest of the sweep.
    """

    def on_trial_complete(self, iteration, trials, trial, **info):
        _release(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        _release(trial.trial_id)

    def on_experiment_end(self, trials, **info):
        for trial in trials:
            _release(trial.trial_id)


def _release(trial_id: str) -> None:
    from ray import serve

    name = rollout_app_name(trial_id)
    if name in serve.status().applications:
        serve.delete(name)
        print(f"[trial] {trial_id}: rollout app {name} released", flush=True)


def run_trial(sampled: dict, base: dict, shared: dict) -> None:
    from ray import serve
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from paretorl import storage
    from paretorl.learner.loop import PRIORITY_KEY, NonFiniteLossError, train_loop
    from paretorl.learner.policy import extensions_dir
    from paretorl.rollout.registry import create_registry
    from paretorl.rollout.serve import in_background, start_rollout_app
    from paretorl.sweep.cluster import shares_a_gpu
    from paretorl.sweep.bases import trial_paths

    tree = trial_tree(sampled, base)
    cfg = TrialConfig.model_validate(tree)
    paths = trial_paths(cfg, shared)  # the base policy and splits of this trial's own model/sft/task setting
    trial_id = tune.get_context().get_trial_id()
    registry_name, app_name = f"paretorl-weights-{trial_id}", rollout_app_name(trial_id)
    registry = create_registry(registry_name)
    # The rollout app deploys while Ray Train starts the learner (each takes seconds: processes,
    # imports, the model); the learner waits for it only when it needs it (connect_when_running).
    lora = cfg.model.lora.model_dump() if cfg.model.lora.rank else None  # replicas are sent adapters of this rank
    deploying = in_background(start_rollout_app, app_name, paths["base_model"], registry_name, cfg.rollout, cfg.resources.accelerator, lora)
    # TorchTrainer passes RAY_TRAIN_* variables of this process on to its controller and workers
    os.environ[REPORT_POLL_ENV] = str(cfg.resources.report_poll_s)
    use_gpu, per_worker = learner_resources(cfg)
    env = {"TORCH_EXTENSIONS_DIR": extensions_dir(), **({} if use_gpu else {"DS_ACCELERATOR": "cpu"})}
    try:
        if shares_a_gpu(cfg):  # the replica's vLLM measures the GPU's memory as it starts: the learner allocates after
            deploying.result()
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={
                "trial": tree,
                "paths": {"base_model": paths["base_model"], "eval": paths["eval"], "registry": registry_name, "rollout_app": app_name},
                "base_eval": shared.get("base_eval") if all(paths[k] == shared[k] for k in paths) else None,  # the reference base's, on its eval split
                "fit_started_at": time.time(),
            },
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(num_workers=cfg.resources.learner_workers, use_gpu=use_gpu, resources_per_worker=per_worker),
            datasets={"train": prompt_dataset(paths["train"])},
            run_config=RunConfig(
                name=f"train-{trial_id}",
                **storage.ray_storage(shared["storage"]),  # storage_path (and storage_filesystem for object storage)
                callbacks=[ReportWithURIs(shared["storage"])],
                failure_config=FailureConfig(max_failures=cfg.resources.max_failures),
                # every evaluated checkpoint (the front links to them) and the latest one (for retries)
                checkpoint_config=CheckpointConfig(num_to_keep=evaluations(cfg) + 1, checkpoint_score_attribute=PRIORITY_KEY),
                worker_runtime_env={"env_vars": env},
            ),
        )
        try:
            trainer.fit()
        except Exception as e:
            if deploying.done() and deploying.exception() is not None:
                raise deploying.exception() from e  # the cause: the rollout app never came up (RolloutAppError names why)
            raise
        failure = ray.get(registry.failure.remote())
        if failure:  # the learner stopped the trial on purpose; Tune marks it failed and the sweep goes on
            raise NonFiniteLossError(failure.split(": ", 1)[1])
    finally:
        wait([deploying])  # a deploy still in flight would re-create the app after its delete
        serve.delete(app_name)
        ray.kill(registry)
