"""Shared fixtures: a local Ray and a tiny SFT base policy, built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A base policy that is cheap to build: the integration tests check machinery, not accuracy.
TINY = {
    "task": {"n_train": 200, "n_eval": 16},
    "model": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 1, "num_heads": 2},
    "sft": {"steps": 20, "n_demos": 200, "batch_size": 16},
    "train": {"steps": 2, "prompts_per_step": 4, "samples_per_prompt": 4, "micro_batch_size": 8, "max_new_tokens": 48},
    "eval": {"every": 2, "n_prompts": 8, "n_samples": 4, "max_new_tokens": 48},
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
    from paretorl.sweep.space import load_space

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
