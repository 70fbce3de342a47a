"""The searcher: sized for the budget (no all-random sweeps), and told each trial's latest evaluation."""

from pathlib import Path

import pytest
from paretorl.search.space import load_space, optuna_sampler, optuna_search, search_plan

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "searchspaces" / "default.yaml"


@pytest.mark.parametrize(
    "trials, concurrent, startup",
    [(6, 2, 2), (2, 2, 2), (12, 2, 5), (24, 2, 10), (100, 2, 10), (24, 8, 5), (6, 4, 2)],
)
def test_startup_rule(trials, concurrent, startup):
    space = load_space(DEFAULT, {"budget": {"trials": trials, "max_concurrent": concurrent}})
    assert search_plan(space).startup == startup  # floor(trials/2) - concurrent + 1, clamped to [2, 10]


def test_default_space_leaves_trials_to_the_model():
    space = load_space(DEFAULT)
    plan = search_plan(space)
    # 4 initial points are the startup (2 needed); 2 trials at a time: trials 5 and 6 are proposed by TPE
    assert (plan.startup, plan.random, plan.guided) == (2, 0, 2)
    assert plan.warning() is None
    assert optuna_sampler(space)._n_startup_trials == 2


def test_a_budget_too_small_to_leave_random_search_is_warned():
    plan = search_plan(load_space(DEFAULT, {"budget": {"trials": 3, "max_concurrent": 2}}))
    assert plan.guided == 0
    assert "random search" in plan.warning() and "raise budget.trials above 4" in plan.warning()


def test_nsga2_population_follows_the_budget():
    space = load_space(DEFAULT, {"sampler": "nsga2", "budget": {"trials": 24, "max_concurrent": 2}})
    assert optuna_sampler(space).population_size == search_plan(space).startup == 11  # Optuna's default is 50


def test_optuna_is_told_the_latest_evaluation_not_the_best():
    """Tune hands OptunaSearch a trial's last report; every report carries the latest evaluation
    (learner/loop.py), so a trial whose pass@4 fell from 0.9 to 0.5 is told 0.5."""
    space = load_space(DEFAULT, {"initial_points": []})
    searcher = optuna_search(space)
    searcher.set_search_properties(None, None, {})
    assert searcher.suggest("t1") is not None
    first = {"step": 4, "evaluated": True, "eval/pass_at_4": 0.9, "eval/mean_tokens": 20.0}
    between = {"step": 5, "evaluated": False, "eval/pass_at_4": 0.9, "eval/mean_tokens": 20.0}  # carries step 4's evaluation
    last = {"step": 8, "evaluated": True, "eval/pass_at_4": 0.5, "eval/mean_tokens": 30.0}
    for result in (first, between, last):
        searcher.on_trial_result("t1", result)
    searcher.on_trial_complete("t1", result=last)
    (trial,) = searcher._ot_study.trials
    assert trial.values == [0.5, 30.0]
