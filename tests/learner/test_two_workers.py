"""Two learner workers on CPU (Ray Train + DeepSpeed, gloo): `train.prompts_per_step` is the
global batch, and only rank 0 evaluates."""

from __future__ import annotations

from tests.conftest import COIN_TASK, tune_one_trial


def test_two_learner_workers_share_the_global_batch_and_evaluate_once(ray_local, tiny_prepared, tmp_path):
    overrides = {"resources": {"learner_workers": 2, "learner_cpus": 0.3}, "train": {"prompts_per_step": 4}}
    sampled = {"algo.objective": "grpo", "algo.alpha": 0.0, "algo.kl_coef": 0.0, "train.lr": 1e-3}
    result = tune_one_trial(tiny_prepared, COIN_TASK, sampled, tmp_path, "two-workers", base_overrides=overrides)
    history = result.metrics_dataframe
    assert history["step"].tolist() == [1, 2]
    assert history["train/batch_prompts"].tolist() == [4.0, 4.0]  # 2 per rank, not 4 per rank
    evaluated = history[history["evaluated"]]
    assert evaluated["eval/evaluating_ranks"].tolist() == [1.0]
    assert 0.0 <= result.metrics["eval/pass_at_1"] <= 1.0
