"""Shared fixtures: a local Ray and a tiny SFT base policy, built once per test session."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A base policy that is cheap to build: the integration tests check machinery, not accuracy.
TINY = {
    "task": {"n_train": 200, "n_eval": 16, "n_test": 16},
    "model": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 1, "num_heads": 2},
    "sft": {"steps": 20, "n_demos": 200, "batch_size": 16},
    "train": {"steps": 2, "prompts_per_step": 4, "samples_per_prompt": 4, "micro_batch_size": 8, "max_new_tokens": 48},
    "eval": {"every": 2, "n_prompts": 8, "n_samples": 4, "max_new_tokens": 48, "test_samples": 4},
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """SFT cache shared by the session's tests (and by subprocess jobs via --cache-dir)."""
    return tmp_path_factory.mktemp("paretorl-cache")


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}})
    from ray import serve

    serve.start(proxy_location="Disabled")
    yield ray
    serve.shutdown()
    ray.shutdown()


# A task a barely trained model already solves about half the time (a response of even
# length), so every RL step has groups with both outcomes and non-zero advantages.
COIN_TASK = str(ROOT / "tests" / "learner" / "coin_task.py") + ":EvenLength"


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory, cache_dir):
    """A prepared sweep (splits + base policy) of the coin task with the TINY trial settings."""
    from paretorl.sweep.run import prepare
    from paretorl.search.space import load_space

    space = load_space(ROOT / "searchspaces" / "default.yaml", {"trial": TINY, "budget": {"trials": 1, "max_concurrent": 1}})
    return prepare(space, COIN_TASK, tmp_path_factory.mktemp("sweep"), cache_dir)


def env_with_venv() -> dict:
    """The environment for subprocess jobs: this interpreter's bin first on PATH."""
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def tune_one_trial(prep, task_spec: str, sampled: dict, storage, name: str, base_overrides: dict | None = None, callbacks=None):
    """Run one trial of a prepared sweep through Tune (the real run_trial path); its Result."""
    from ray import tune

    from paretorl.config import deep_merge
    from paretorl.sweep.run import base_evaluation, deep_copy_trial
    from paretorl.sweep.trial import run_trial

    prep.shared["base_eval"] = base_evaluation(prep)
    base = deep_merge(deep_copy_trial(prep.space, task_spec), base_overrides or {})
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(run_trial, base=base, shared=prep.shared), {"cpu": 0.01}),
        param_space=sampled,
        run_config=tune.RunConfig(storage_path=str(storage), name=name, verbose=0, callbacks=callbacks or []),
    )
    grid = tuner.fit()
    assert not grid.errors, grid.errors
    return grid[0]


def tune_tracked_trial(prep, sampled: dict, overrides: dict, tmp: Path, name: str):
    """`tune_one_trial` with the sweep's MLflow logger attached: (Result, MlflowClient, the trial's run id)."""
    from mlflow import MlflowClient

    from paretorl.report.tracking import MLflowSweepLogger, ensure_experiment

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = ensure_experiment(client, name, uri)
    logger = MLflowSweepLogger(uri, exp, client.create_run(exp).info.run_id, ("eval/pass_at_4", "eval/mean_tokens"), tmp / "trials_state.json")
    result = tune_one_trial(prep, COIN_TASK, sampled, tmp / "tune", name, overrides, callbacks=[logger])
    (run_id,) = logger.runs.values()
    return result, client, run_id


@dataclass
class SweepRun:
    """A finished `jobs/sweep.py` run: where it ran, what it printed, where it logged."""

    cwd: Path
    proc: subprocess.CompletedProcess

    @property
    def db(self) -> Path:
        return self.cwd / "mlflow.db"

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.db}"

    @property
    def runs_dir(self) -> Path:
        return self.cwd / "runs"


def run_sweep_job(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """`jobs/sweep.py ARGS` in a subprocess with this venv, from `cwd`."""
    import sys

    return subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "sweep.py"), *args],
        cwd=cwd, env=env_with_venv(), capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory, cache_dir) -> SweepRun:
    """One `jobs/sweep.py --smoke-test` for the whole session: tests that only read its results share it."""
    cwd = tmp_path_factory.mktemp("smoke-sweep")
    proc = run_sweep_job(["--smoke-test", "--output-dir", str(cwd / "runs"), "--cache-dir", str(cache_dir)], cwd=cwd)
    return SweepRun(cwd, proc)
