"""Every class of bad input is refused by jobs/sweep.py with exit code 2 and a message naming
the file, the key and the problem, before Ray starts (run in-process: fast, and any call to
`ray.init` can be seen directly, even when another test of the session holds a local Ray)."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def sweep_main():
    spec = importlib.util.spec_from_file_location("sweep_job", ROOT / "jobs" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture
def ray_starts(monkeypatch):
    """Calls to `ray.init` made during the test; each is refused so that none gets through."""
    import ray

    calls = []

    def refuse(*args, **kwargs):
        calls.append((args, kwargs))
        raise RuntimeError("ray.init called on bad input")

    monkeypatch.setattr(ray, "init", refuse)
    return calls


SPACE = """
params:
  algo.alpha: {type: categorical, choices: [0.0, 0.2]}
"""

# (file name, file text, extra args, substrings the message must contain)
CASES = {
    "yaml_syntax": ("space.yaml", "params: [unclosed", [], ["space.yaml", "YAML syntax error"]),
    "unknown_top_key": ("space.yaml", SPACE + "budgett: {trials: 2}\n", [], ["space.yaml", "budgett", "Extra inputs are not permitted"]),
    "unknown_trial_key": ("space.yaml", SPACE + "trial: {train: {stepz: 3}}\n", [], ["space.yaml", "trial", "stepz"]),
    "inverted_range": ("space.yaml", "params:\n  train.lr: {type: float, low: 1.0e-3, high: 1.0e-5}\n", [], ["space.yaml", "train.lr", "inverted"]),
    "empty_choices": ("space.yaml", "params:\n  algo.alpha: {type: categorical, choices: []}\n", [], ["space.yaml", "algo.alpha", "non-empty 'choices'"]),
    "non_positive_lr": ("space.yaml", "params:\n  train.lr: {type: float, low: 0.0, high: 1.0e-3}\n", [], ["space.yaml", "params.train.lr = 0.0", "greater than 0"]),
    "alpha_out_of_range": ("space.yaml", "params:\n  algo.alpha: {type: categorical, choices: [0.2, 1.0]}\n", [], ["space.yaml", "params.algo.alpha = 1.0", "less than 1"]),
    "unknown_objective": ("space.yaml", "params:\n  algo.objective: {type: categorical, choices: [grpo, ppo]}\n", [], ["space.yaml", "'ppo'", "valid: grpo, maxrl, rloo, dr_grpo"]),
    "model_key_range": ("space.yaml", SPACE + "  model.hidden_size: {type: int, low: 64, high: 128}\n", [], ["space.yaml", "params.model.hidden_size", "cannot be prepared ahead"]),
    "unknown_engine": ("space.yaml", SPACE + "trial: {rollout: {engine: sglang}}\n", [], ["space.yaml", "rollout.engine", "'sglang'", "valid: embedded, vllm"]),
    "missing_space": (None, None, ["--space", "nowhere.yaml"], ["search space file not found: nowhere.yaml"]),
    "missing_dataset": (None, None, ["--task", "data/missing.jsonl"], ["missing.jsonl"]),
    "empty_dataset": ("empty.jsonl", "", ["--task", "empty.jsonl"], ["empty.jsonl", "empty"]),
    "row_without_answer": ("rows.jsonl", '{"prompt": "1+1?", "answer": "2"}\n{"prompt": "2+2?"}\n', ["--task", "rows.jsonl"], ["rows.jsonl", "answer"]),
    "unknown_profile": (None, None, ["--profile", "tpu-pod"], ["unknown profile 'tpu-pod'", "available:"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_before_ray_starts(case, sweep_main, tmp_path, monkeypatch, capsys, ray_starts):
    name, text, extra, needles = CASES[case]
    monkeypatch.chdir(tmp_path)
    args = ["--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")]
    if name is not None:
        (tmp_path / name).write_text(text)
        if name.endswith(".yaml"):
            args += ["--space", name]
    rc = sweep_main(args + extra)
    err = capsys.readouterr().err
    assert rc == 2, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in: {err}"
    assert not ray_starts
    assert not list((tmp_path / "runs").glob("*/sweep.json"))  # nothing recorded as a sweep


def test_a_user_task_that_writes_rows_without_answers_is_refused(sweep_main, tmp_path, monkeypatch, capsys, ray_starts):
    (tmp_path / "noanswer.py").write_text(textwrap.dedent('''
        class NoAnswer:
            def generate(self, split, n, seed):
                return [{"prompt": f"{split} {i}", "answer": ""} for i in range(n)]
            def score(self, row, completion):
                return False
            def demonstrate(self, row, rng):
                return "x"
    '''))
    monkeypatch.chdir(tmp_path)
    rc = sweep_main(["--task", "noanswer.py:NoAnswer", "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and "NoAnswer.generate" in err and "row 0 field 'answer' is empty" in err, err
    assert not ray_starts


def test_a_model_whose_tokenizer_does_not_match_is_refused(sweep_main, tmp_path, monkeypatch, capsys, ray_starts):
    """A pretrained directory whose vocabulary is smaller than its tokenizer's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from paretorl.models.tokenizer import build_tokenizer

    tok = build_tokenizer(["1+1=2", "hello world"] * 50, vocab_size=300)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    model.save_pretrained(tmp_path / "model", safe_serialization=True)
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "space.yaml").write_text(SPACE + f"trial: {json.dumps({'model': {'pretrained': str(tmp_path / 'model')}})}\n")
    monkeypatch.chdir(tmp_path)
    rc = sweep_main(["--space", "space.yaml", "--output-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "do not match" in err and str(tmp_path / "model") in err
    assert not ray_starts
