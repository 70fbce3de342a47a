"""One trial through the real stack: Serve rollouts, Ray Train + DeepSpeed, Tune reporting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import COIN_TASK, tune_one_trial


@pytest.fixture(scope="module")
def trial_result(ray_local, tiny_prepared, tmp_path_factory):
    sampled = {"algo.objective": "maxrl", "algo.alpha": 0.2, "algo.kl_coef": 0.01, "train.lr": 3e-3}
    return tiny_prepared, tune_one_trial(tiny_prepared, COIN_TASK, sampled, tmp_path_factory.mktemp("tune"), "one-trial")


def test_trial_reports_every_step_and_evaluates(trial_result):
    _, result = trial_result
    history = result.metrics_dataframe
    assert history["step"].tolist() == [1, 2]
    assert history["policy_version"].tolist() == [1, 2]  # one update per step, versions in order
    last = result.metrics
    assert last["evaluated"] and last["eval/step"] == 2
    for k in (1, 2, 4):
        assert 0.0 <= last[f"eval/pass_at_{k}"] <= 1.0
    assert last["eval/pass_at_1"] <= last["eval/pass_at_2"] <= last["eval/pass_at_4"]
    assert last["eval/mean_tokens"] > 0
    assert 0.0 < history["train/correct_frac"].iloc[0] < 1.0  # both outcomes: the update is not a no-op
    assert history["train/zero_adv_groups_frac"].iloc[0] < 1.0
    assert 0.0 <= last["train/kl"] < 1.0  # KL coefficient > 0 puts the KL term in the loss
    # rollouts sampled by the bf16 engine vs the fp32 learner's log-probs of the same tokens
    assert last["rollout/logprob_abs_diff"] < 0.1


def test_trial_checkpoint_holds_updated_weights(trial_result):
    prep, result = trial_result
    ckpt = Path(result.metrics["checkpoint_path"])
    trained = load_file(ckpt / "model.safetensors")
    base = load_file(Path(prep.shared["base_model"]) / "model.safetensors")
    assert trained.keys() == base.keys()
    changed = [k for k in base if not torch.equal(base[k], trained[k])]
    assert len(changed) > len(base) // 2, f"only {changed} changed"
    assert (ckpt / "trial_state.json").exists() and (ckpt / "tokenizer.json").exists()
