"""A LoRA trial through the real stack (Serve, Ray Train + DeepSpeed, Tune, MLflow), killed mid-trial."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tune_tracked_trial


@pytest.fixture(scope="module")
def lora_trial(ray_local, tiny_prepared, tmp_path_factory):
    # SIGKILL of the learner at the start of step 3 of 4, on the first attempt; KL in the loss
    # exercises the reference (the policy's own module with its adapters off)
    overrides = {"train": {"steps": 4}, "faults": {"crash_at_step": 3}, "model": {"lora": {"rank": 8, "alpha": 16}}}
    sampled = {"algo.objective": "grpo", "train.lr": 3e-3, "algo.kl_coef": 0.01, "algo.kl_placement": "loss"}
    return (tiny_prepared, *tune_tracked_trial(tiny_prepared, sampled, overrides, tmp_path_factory.mktemp("lora"), "lora"))


def test_lora_trial_resumes_from_its_adapter_checkpoint(lora_trial):
    _, result, client, run_id = lora_trial
    logged = lambda key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]  # noqa: E731
    assert [s for s, _ in logged("train/reward_mean")] == [1, 2, 3, 4]  # no gap, no repeat
    restored = dict(logged("train/restored_from_step"))
    assert restored[1] == -1 and restored[4] in (1, 2)
    assert result.metrics["evaluated"] and result.metrics["eval/step"] == 4
    # the replica merged each published adapter: it sampled with the learner's policy
    assert all(v < 0.1 for _, v in logged("rollout/logprob_abs_diff"))
    assert 0.0 <= result.metrics["train/kl"] < 1.0
    assert client.get_run(run_id).info.status == "FINISHED"


def test_lora_trial_publishes_and_checkpoints_adapters_only(lora_trial):
    prep, result, client, run_id = lora_trial
    base = load_file(Path(prep.shared["base_model"]) / "model.safetensors")
    base_bytes = sum(t.numel() * t.element_size() for t in base.values())
    synced = [m.value for m in client.get_metric_history(run_id, "rollout/sync_bytes")]
    assert len(synced) == 4 and all(0 < v < base_bytes / 4 for v in synced)

    ckpt = Path(result.metrics["checkpoint_path"])
    assert (ckpt / "adapter_config.json").exists() and (ckpt / "tokenizer.json").exists()
    assert not (ckpt / "model.safetensors").exists()
    from paretorl.models.lora import Adapter

    adapter = Adapter.load(ckpt)
    assert adapter.base == prep.shared["base_model"] and adapter.rank == 8
    assert any(t.abs().max() > 0 for k, t in adapter.tensors.items() if "lora_B" in k)  # trained
    # DeepSpeed's state holds the adapters and their Adam moments, not the frozen base and its moments
    # (a full trial's is ~3x the base). One frozen tensor remains: DeepSpeed's exclude_frozen_parameters
    # walks named_parameters(), which lists a tied weight once, so the tied LM head's key stays.
    ds_files = list((ckpt / "deepspeed").rglob("*.pt"))
    assert ds_files and sum(f.stat().st_size for f in ds_files) < 1.5 * base_bytes
    module = torch.load(next(f for f in ds_files if "model_states" in f.name), weights_only=False)["module"]
    assert module and all("lora_" in k for k in module if not k.endswith("lm_head.weight"))
