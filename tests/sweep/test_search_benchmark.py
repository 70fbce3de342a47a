"""benchmarks/search.py's comparison on synthetic traces, and the space each method's sweep gets."""

from __future__ import annotations

import importlib.util
import math

import pytest

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("search_benchmark", ROOT / "benchmarks" / "search.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def run(trace, cpu=None):
    return {"trace": trace, "cpu_seconds": cpu if cpu is not None else trace[-1][0]}


def test_cpu_to_match_random_is_the_share_of_the_budget_a_method_needs():
    runs = {
        "random": [run([[0, 0.1], [50, 0.3], [100, 0.5]]), run([[0, 0.1], [90, 0.4]]), run([[0, 0.1], [110, 0.6]])],
        "tpe": [run([[0, 0.1], [40, 0.5]]), run([[0, 0.1], [80, 0.45]]), run([[0, 0.1], [60, 0.7]])],
        "tpe_moasha": [run([[0, 0.1], [30, 0.6]]), run([[0, 0.1], [20, 0.5]]), run([[0, 0.1], [120, 0.9]])],
    }
    result = bench.compare(runs, budget=100.0)
    assert result["random_final_median_hv"] == 0.5  # median of 0.5, 0.4, 0.6
    assert result["hv"]["random"] == [0.5, 0.4, 0.6]  # random: its whole run
    assert result["hv"]["tpe_moasha"] == [0.6, 0.5, 0.1]  # others: at the budget (120 CPU-s is past it)
    assert result["cpu_to_match_random_per_seed"] == {"tpe": [0.4, None, 0.6], "tpe_moasha": [0.3, 0.2, None]}
    assert result["cpu_to_match_random"] == {"tpe": 0.6, "tpe_moasha": 0.3}  # None counts as never (+inf)


def test_a_method_that_mostly_never_matches_gets_null():
    assert bench.median_or_none([None, None, 0.2]) is None
    assert bench.median_or_none([0.5]) == 0.5
    assert bench.hv_at([[10, 0.2], [20, 0.3]], 5) == 0.0
    assert bench.cpu_to_reach([[10, 0.2], [20, 0.3]], 0.3, limit=19) is None


def test_each_method_gets_its_sampler_scheduler_and_budget(tmp_path):
    args = bench.parse_args(["--out", str(tmp_path)])
    random = bench.run_space(args, "random", 1, None)
    assert (random["sampler"], random["seed"], random["trial"]["train"]["seed"]) == ("random", 1, 1)
    assert random["budget"]["trials"] == 12 and "cpu_seconds" not in random["budget"] and random.get("scheduler", {"type": "fifo"}) == {"type": "fifo"}
    moasha = bench.run_space(args, "tpe_moasha", 2, 1234.56)
    assert moasha["sampler"] == "tpe" and moasha["budget"] == {"trials": 48, "max_concurrent": 2, "cpu_seconds": 1234.6}
    assert moasha["scheduler"] == {"type": "moasha", "grace_steps": 4, "reduction_factor": 3}  # grace = eval.every
    plan = bench.search_plan(args, moasha)  # the product's rule for random's 12 trials, not the cap of 48
    assert (plan.trials, plan.startup) == (12, 12 // 2 - 2 + 1)
    quick = bench.parse_args(["--quick", "--out", str(tmp_path)])
    assert quick.seeds == 1 and bench.run_space(quick, "tpe_moasha", 0, 50.0)["scheduler"]["grace_steps"] == 2
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "random,bohb"])
    assert math.isclose(bench.hv_at([[0, 0.1]], math.inf), 0.1)


def test_a_budgeted_run_sizes_its_searcher_for_random_s_trials_not_its_cap(tmp_path, monkeypatch):
    import paretorl.search.space as space_mod
    from paretorl.search.space import SearchSpace

    monkeypatch.setattr(space_mod, "optuna_sampler", space_mod.optuna_sampler)  # restored after the test
    args = bench.parse_args(["--out", str(tmp_path)])
    space = SearchSpace.model_validate(bench.run_space(args, "tpe_moasha", 0, 500.0))
    assert space_mod.optuna_sampler(space)._n_startup_trials == 10  # the cap of 48 trials: Optuna's 10
    bench.size_searcher_for(args.random_trials)
    assert space_mod.optuna_search(space)._sampler._n_startup_trials == 12 // 2 - 2 + 1
