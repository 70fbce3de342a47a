"""Swept model/sft/task keys are honoured: one base policy per (model, sft, task) setting, splits
per task setting, and each trial gets its own."""

import json
from pathlib import Path

import pytest
from paretorl.search.settings import (
    base_settings,
    reference_config,
    setting_key,
    task_key,
)
from paretorl.search.space import load_space
from paretorl.sweep.bases import trial_paths

from tests.conftest import COIN_TASK, ROOT

DEFAULT = ROOT / "searchspaces" / "default.yaml"


def test_settings_enumerate_every_combination_of_swept_base_keys():
    space = load_space(DEFAULT, {
        "params": {"task.kwargs.max_ops": {"type": "categorical", "choices": [2, 3]},
                   "model.hidden_size": {"type": "categorical", "choices": [64, 128]}},
        "initial_points": [],
    })
    settings = base_settings(space, "arith")
    assert len(settings) == 4 and len({setting_key(c) for c in settings}) == 4
    assert {(c.task.kwargs["max_ops"], c.model.hidden_size) for c in settings} == {(2, 64), (2, 128), (3, 64), (3, 128)}
    assert len({task_key(c) for c in settings}) == 2  # two task settings: two sets of splits
    ref = reference_config(space, "arith")  # no initial points: each key's first choice, a setting trials use
    assert (ref.task.kwargs["max_ops"], ref.model.hidden_size) == (2, 64) and setting_key(settings[0]) == setting_key(ref)


def test_without_swept_base_keys_there_is_one_setting():
    space = load_space(DEFAULT)
    (only,) = base_settings(space, "arith")
    assert setting_key(only) == setting_key(space.trial_config({}, {"task": {"name": "arith"}}))


def test_sweeping_hidden_size_trains_two_distinct_base_policies(tmp_path, cache_dir):
    from paretorl.sweep.run import prepare

    from tests.reliability.sweeps import tiny_space

    params = {"model.hidden_size": {"type": "categorical", "choices": [32, 64]}, "algo.alpha": {"type": "categorical", "choices": [0.0, 0.2]}}
    space = load_space(tiny_space(tmp_path / "space.yaml", params, [{"model.hidden_size": 64, "algo.alpha": 0.0}], trials=2, max_concurrent=1))
    prep = prepare(space, COIN_TASK, tmp_path / "sweep", cache_dir)
    assert len(prep.shared["settings"]) == 2
    sizes = {}
    for hidden in (32, 64):
        cfg = space.trial_config({"model.hidden_size": hidden}, {"task": {"name": COIN_TASK}})
        paths = trial_paths(cfg, prep.shared)
        sizes[hidden] = json.loads((Path(paths["base_model"]) / "config.json").read_text())["hidden_size"]
        assert paths["train"] == prep.shared["train"] and paths["eval"] == prep.shared["eval"]  # one task setting: one set of splits
    assert sizes == {32: 32, 64: 64}
    assert prep.shared["base_model"] == trial_paths(space.trial_config({"model.hidden_size": 64}, {"task": {"name": COIN_TASK}}), prep.shared)["base_model"]
    assert "test.parquet" not in json.dumps(prep.shared)  # nothing a trial reads names the test split
    assert list(prep.test_splits.values()) == [str(tmp_path / "sweep" / "data" / "test.parquet")]
    with pytest.raises(KeyError, match="no base policy was prepared"):
        trial_paths(space.trial_config({"model.hidden_size": 48}, {"task": {"name": COIN_TASK}}), prep.shared)


def test_lora_keys_shape_trials_not_the_base():
    """model.lora.* may be swept as ranges, and every rank and alpha shares the one base policy."""
    space = load_space(ROOT / "searchspaces" / "lora.yaml", {
        "params": {"model.lora.alpha": {"type": "float", "low": 8.0, "high": 64.0, "log": True}},
        "initial_points": [],
    })
    (only,) = base_settings(space, "arith")
    keys = {setting_key(space.trial_config({"model.lora.rank": r, "model.lora.alpha": a}, {"task": {"name": "arith"}})) for r in (8, 16) for a in (8.0, 64.0)}
    assert keys == {setting_key(only)}
    assert setting_key(only) == setting_key(load_space(DEFAULT).trial_config({}, {"task": {"name": "arith"}}))  # the full fine-tune's base
