"""The space file's scheduler, hypervolume and CPU-budget settings, and the Tune pieces they become."""

from __future__ import annotations

import pytest

from paretorl.search.space import SpaceError, load_space

GOOD = """
params:
  algo.alpha: {type: categorical, choices: [0.0, 0.2]}
trial: {train: {steps: 12}, eval: {every: 4, max_new_tokens: 48}}
"""


def space_file(tmp_path, extra: str = ""):
    path = tmp_path / "space.yaml"
    path.write_text(GOOD + extra)
    return path


def test_defaults_are_fifo_no_budget_and_the_eval_token_limit_as_reference(tmp_path):
    from paretorl.search.stopping import reference_point

    space = load_space(space_file(tmp_path))
    assert space.scheduler.type == "fifo" and space.budget.cpu_seconds is None
    assert reference_point(space, space.trial_config({})) == (0.0, 48.0)


def test_moasha_and_a_reference_point_are_read(tmp_path):
    from paretorl.search.stopping import reference_point

    space = load_space(space_file(tmp_path, "scheduler: {type: moasha, grace_steps: 2, reduction_factor: 2, tie_break: crowding}\n"
                                            "hypervolume: {reference: {pass_k: 0.1, tokens: 40}}\nbudget: {cpu_seconds: 600}\n"))
    assert (space.scheduler.grace_steps, space.scheduler.reduction_factor, space.scheduler.tie_break) == (2, 2.0, "crowding")
    assert reference_point(space, space.trial_config({})) == (0.1, 40.0)
    assert space.budget.cpu_seconds == 600


@pytest.mark.parametrize(
    "extra, words",
    [
        ("scheduler: {type: asha}\n", ["scheduler", "'asha'", "'fifo', 'moasha'"]),
        ("scheduler: {type: moasha, grace: 2}\n", ["scheduler.moasha.grace", "Extra inputs"]),
        ("scheduler: {type: fifo, grace_steps: 2}\n", ["scheduler.fifo.grace_steps"]),
        ("scheduler: {type: moasha, reduction_factor: 1}\n", ["reduction_factor", "greater than 1"]),
        ("scheduler: {type: moasha, grace_steps: 12}\n", ["grace_steps = 12", "train.steps = 12"]),
        ("scheduler: {type: moasha, tie_break: random}\n", ["tie_break"]),
        ("hypervolume: {reference: {tokens: 0}}\n", ["hypervolume.reference.tokens"]),
        ("hypervolume: {reference: {pass_k: 1.0}}\n", ["hypervolume.reference.pass_k"]),
        ("hypervolume: {ref: {}}\n", ["hypervolume.ref"]),
        ("budget: {cpu_seconds: -5}\n", ["budget.cpu_seconds"]),
    ],
)
def test_bad_settings_are_refused_with_the_key_named(tmp_path, extra, words):
    path = space_file(tmp_path, extra)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    for word in [str(path), *words]:
        assert word in str(err.value)


def test_moasha_refuses_a_space_that_sweeps_the_step_budget(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("scheduler: {type: moasha}\nparams:\n  train.steps: {type: categorical, choices: [8, 12]}\n")
    with pytest.raises(SpaceError, match=r"same steps and evaluations; params sweeps \['train.steps'\]"):
        load_space(path)


def test_tune_extras_build_the_scheduler_the_trace_and_the_budget(tmp_path):
    from paretorl.report.search_progress import HypervolumeTrace
    from paretorl.search.hypervolume import CpuBudget
    from paretorl.search.moasha import MOASHA
    from paretorl.sweep.tune_extras import tune_extras

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fifo = tune_extras(load_space(space_file(tmp_path)), tmp_path / "a", uri, "parent")
    assert fifo.scheduler is None and fifo.stop is None and fifo.end_tags("any") == {}
    assert isinstance(fifo.callbacks[0], HypervolumeTrace)

    space = load_space(space_file(tmp_path, "scheduler: {type: moasha}\nbudget: {cpu_seconds: 100}\n"))
    extras = tune_extras(space, tmp_path / "b", uri, "parent", base_eval={"eval/pass_at_4": 0.5, "eval/mean_tokens": 24.0})
    assert isinstance(extras.scheduler, MOASHA) and extras.scheduler.rung_steps == [4]  # 4, 12 = the last step
    assert extras.scheduler.scale == (1.0, 48.0)
    assert isinstance(extras.stop, CpuBudget) and extras.stop.budget == 100
    assert extras.callbacks[0].trace == [[0.0, pytest.approx(0.5 * 24 / 48)]]  # the base policy starts the trace
