"""Search-space files: the shipped ones load; each class of mistake is refused by name."""

from pathlib import Path

import pytest

from paretorl.config import TrainConfig
from paretorl.search.space import SpaceError, load_space

ROOT = Path(__file__).resolve().parents[2]
GOOD = """
params:
  algo.alpha: {type: categorical, choices: [0.0, 0.2]}
  train.lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}
"""


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "searchspaces").glob("*.yaml")))
def test_shipped_spaces_load(name):
    space = load_space(ROOT / "searchspaces" / name)
    assert space.params
    assert space.metrics[1] == "eval/mean_tokens"


def test_default_space_covers_both_objectives_and_three_alphas():
    space = load_space(ROOT / "searchspaces" / "default.yaml")
    objectives = {p["algo.objective"] for p in space.initial_points}
    alphas = {p["algo.alpha"] for p in space.initial_points}
    assert {"grpo", "maxrl"} <= objectives
    assert len(alphas) >= 3
    assert space.budget.trials >= 6


def test_validation_leaves_the_fixed_settings_as_written(tmp_path):
    # Validation builds a config at every corner; a corner's value must not stay behind in the
    # space's fixed `trial` section (once, the last corner's train.lr did: a shallow copy).
    space = load_space(write(tmp_path, GOOD + "initial_points:\n  - {algo.alpha: 0.2, train.lr: 5.0e-4}\ntrial:\n  train: {steps: 7}\n"))
    assert space.trial == {"train": {"steps": 7}}
    assert space.trial_config({}).train.lr == TrainConfig().lr
    assert space.trial_config({"train.lr": 1e-3}).train.lr == 1e-3
    assert space.trial == {"train": {"steps": 7}}


def test_good_space_builds_optuna_distributions(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    dists = {k: v.distribution() for k, v in space.params.items()}
    assert dists["train.lr"].log and dists["train.lr"].low == pytest.approx(1e-4)
    assert list(dists["algo.alpha"].choices) == [0.0, 0.2]
    cfg = space.trial_config({"algo.alpha": 0.2, "train.lr": 5e-4})
    assert cfg.algo.alpha == 0.2 and cfg.train.lr == 5e-4


@pytest.mark.parametrize(
    "text, words",
    [
        ("params: {a: [", ["YAML syntax"]),
        ("- just a list", ["mapping"]),
        ("params: {}", ["params", "empty"]),
        (GOOD + "bogus_key: 1\n", ["bogus_key"]),
        ("params:\n  train.lr: {type: float, low: 1.0e-3, high: 1.0e-4}", ["inverted", "train.lr"]),
        ("params:\n  train.lr: {type: float, low: 1.0e-3, high: 1.0e-3}", ["empty", "train.lr"]),
        ("params:\n  train.lr: {type: float, low: -1.0, high: 1.0e-3}", ["train.lr", "-1.0", "greater than 0"]),
        ("params:\n  algo.alpha: {type: float, low: 0.0, high: 1.0}", ["algo.alpha", "1.0", "less than 1"]),
        ("params:\n  algo.objective: {type: categorical, choices: [grpo, ppo]}", ["ppo", "grpo, maxrl, rloo, dr_grpo"]),
        ("params:\n  rollout.engine: {type: categorical, choices: [embedded, sglang]}", ["sglang", "embedded"]),
        ("params:\n  algo.alpha: {type: categorical, choices: []}", ["choices"]),
        ("params:\n  algo.alpha: {type: uniform, low: 0, high: 0.5}", ["type"]),
        (GOOD + "trial: {train: {stepz: 3}}\n", ["trial", "stepz"]),
        (GOOD + "initial_points: [{algo.alpha: 0.1}]\n", ["initial_points[0]", "train.lr"]),
        (GOOD + "objectives: {pass_k: 3}\n", ["power of two"]),
        (GOOD + "objectives: {pass_k: 64}\n", ["exceeds", "n_samples"]),
        (GOOD + "trial: {eval: {test_samples: 2}}\n", ["pass_k = 4 exceeds eval.test_samples = 2"]),
        # keys prepared before Ray starts (base policy, splits) take listed values only
        (GOOD + "  model.hidden_size: {type: int, low: 64, high: 128}\n", ["params.model.hidden_size", "int range cannot be prepared ahead", "base policy", "categorical"]),
        (GOOD + "  sft.lr: {type: float, low: 1.0e-3, high: 1.0e-2}\n", ["params.sft.lr", "float range cannot be prepared ahead"]),
        (GOOD + "  task.kwargs.max_ops: {type: int, low: 2, high: 4}\n", ["params.task.kwargs.max_ops", "needs its own splits"]),
        (GOOD + "  task.name: {type: categorical, choices: [arith, maze]}\n", ["params.task.name", "one sweep per task"]),
        (GOOD + "  eval.temperature: {type: categorical, choices: [0.6, 1.0]}\n", ["params.eval.temperature", "cannot share a front"]),
    ],
)
def test_bad_spaces_are_refused_with_the_key_named(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SpaceError, match="not found"):
        load_space(tmp_path / "nope.yaml")
