"""AlgoConfig: the papers' defaults, and the combinations it refuses (with the reason)."""

import pytest
from pydantic import ValidationError

from paretorl.config import AlgoConfig, TrialConfig


def test_defaults_are_the_papers():
    """Arora & Zanette: k1 in the reward (beta 1e-3); MaxRL: KL 0; GRPO: k3 in the loss."""
    algo = AlgoConfig()
    assert (algo.kl_coef, algo.kl_estimator, algo.kl_placement) == (0.0, "k1", "reward")
    assert AlgoConfig(kl_coef=1e-3).kl_estimator == "k1"
    assert AlgoConfig(kl_coef=1e-3, kl_placement="loss").kl_estimator == "k3"
    assert AlgoConfig(kl_placement="loss", kl_estimator="k2").kl_estimator == "k2"
    trial = TrialConfig(algo={"kl_coef": 0.01, "kl_placement": "loss"})  # as a sweep builds it
    assert trial.algo.kl_estimator == "k3"


@pytest.mark.parametrize("estimator", ["k2", "k3"])
def test_detached_k2_k3_penalty_is_refused(estimator):
    with pytest.raises(ValidationError, match=f"kl_estimator {estimator} with algo.kl_placement reward") as err:
        AlgoConfig(kl_coef=1e-3, kl_estimator=estimator, kl_placement="reward")
    assert "regularises nothing" in str(err.value) and "k1" in str(err.value)
    # no coefficient, nothing to regularise: accepted
    assert AlgoConfig(kl_coef=0.0, kl_estimator=estimator).kl_placement == "reward"


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_every_estimator_is_accepted_in_the_loss(estimator):
    """The loss placement is importance-weighted: all three follow KL(pi || ref) (test_kl_gradients)."""
    algo = AlgoConfig(kl_coef=1e-3, kl_estimator=estimator, kl_placement="loss")
    assert algo.kl_estimator == estimator


def test_grpo_with_group_std_is_refused():
    with pytest.raises(ValidationError, match="second time") as err:
        AlgoConfig(objective="grpo", normalization="group_std")
    assert "dr_grpo" in str(err.value)
    for objective in ("dr_grpo", "rloo", "maxrl"):
        assert AlgoConfig(objective=objective, normalization="group_std").objective == objective


def test_dr_grpo_aggregation_is_a_valid_name():
    assert AlgoConfig(aggregation="seq_mean_token_sum_norm").aggregation == "seq_mean_token_sum_norm"
