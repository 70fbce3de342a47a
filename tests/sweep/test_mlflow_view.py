"""How a sweep reads in MLflow: experiment kind, trial run names, the parent run's description."""

from __future__ import annotations

from types import SimpleNamespace

from mlflow import MlflowClient

from paretorl.report.mlflow_view import KIND_TAG, NOTE_TAG, TRAINING_KIND, sweep_note, space_markdown, trial_run_name
from paretorl.search.space import SearchSpace
from paretorl.report.tracking import MLflowSweepLogger, ensure_experiment

MAX, MIN = "eval/pass_at_4", "eval/mean_tokens"
SPACE = SearchSpace.model_validate({
    "params": {
        "algo.alpha": {"type": "categorical", "choices": [0.0, 0.2]},
        "train.lr": {"type": "float", "low": 2e-5, "high": 3e-4, "log": True},
        "algo.objective": {"type": "categorical", "choices": ["grpo", "maxrl"]},
    },
    "budget": {"trials": 6, "max_concurrent": 2},
})


def test_trial_names_put_the_knobs_first():
    config = {"train.lr": 0.000123456, "algo.kl_coef": 0.001, "algo.alpha": 0.2, "algo.objective": "maxrl", "train.seed": 3}
    assert trial_run_name("a1b2c_00003", config) == "maxrl alpha=0.2 lr=0.000123 KL=0.001 seed=3 (a1b2c_00003)"
    assert trial_run_name("x_1", {}) == "(x_1)"


def test_the_note_holds_front_base_space_and_how_to_read():
    base = {"trial": "base", "step": 0, "eval/pass_at_1": 0.5, MAX: 0.8, MIN: 40.0}
    front = [{"trial": "t1", "step": 4, MAX: 0.82, MIN: 30.0, "algo.alpha": 0.2, "train.lr": 1e-4, "algo.objective": "grpo"}]
    note = sweep_note("s1", front, base, MAX, MIN, list(SPACE.params), space_markdown(SPACE))
    assert "| t1 | 4 | 0.820 (+0.020) | 30.0 (-25%) | 0.2 | 0.0001 | grpo |" in note
    assert "pass@1 0.500, pass@4 0.800, mean tokens 40.0" in note
    assert "| trial | step | pass@4 | mean tokens | alpha | lr | objective |" in note
    assert "| `train.lr` | 2e-05 to 0.0003, log scale |" in note and "| `algo.objective` | one of grpo, maxrl |" in note
    assert "6 trials, 2 at a time" in note
    assert "### How to read the front" in note
    long = sweep_note("s1", front * 500, base, MAX, MIN, list(SPACE.params), space_markdown(SPACE))
    assert len(long) <= 8000 and "470 more points on the front" in long


def test_experiment_kind_set_when_created_or_unset_and_kept_when_chosen(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    created = ensure_experiment(client, "new", uri)
    assert client.get_experiment(created).tags[KIND_TAG] == TRAINING_KIND
    bare = client.create_experiment("bare")
    assert ensure_experiment(client, "bare", uri) == bare
    assert client.get_experiment(bare).tags[KIND_TAG] == TRAINING_KIND
    chosen = client.create_experiment("chosen", tags={KIND_TAG: "genai_development"})
    ensure_experiment(client, "chosen", uri)
    assert client.get_experiment(chosen).tags[KIND_TAG] == "genai_development"


def test_the_tracker_names_trial_runs_and_describes_the_parent(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = ensure_experiment(client, "t", uri)
    parent = client.create_run(exp).info.run_id
    base = {"trial": "base", "step": 0, MAX: 0.5, MIN: 40.0}
    note = {"name": "s1", "knobs": list(SPACE.params), "space_md": space_markdown(SPACE)}
    logger = MLflowSweepLogger(uri, exp, parent, (MAX, MIN), tmp_path / "state.json", base_point=base, note=note)
    trial = SimpleNamespace(trial_id="t1", config={"algo.objective": "grpo", "algo.alpha": 0.2, "train.lr": 1e-4}, error_file=None)
    logger.on_trial_start(0, [], trial)
    logger.on_trial_result(0, [], trial, {"step": 2, "evaluated": True, MAX: 0.6, MIN: 20.0, "timestamp": 1})
    logger.on_trial_complete(0, [], trial)
    (run_id,) = logger.runs.values()
    assert client.get_run(run_id).info.run_name == "grpo alpha=0.2 lr=0.0001 (t1)"
    described = client.get_run(parent).data.tags[NOTE_TAG]
    assert "| t1 | 2 | 0.600 (+0.100) | 20.0 (-50%) |" in described
