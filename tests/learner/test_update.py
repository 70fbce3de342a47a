"""The learner's update does no work that cannot change the gradient, and the gradient is unchanged.

`rl_step` (zero-advantage rows skipped, one forward per row, micro-batches sorted and trimmed,
chunked log-probs) against a reference written the plain way: the whole padded batch, a
separate no-grad forward for the old log-probs, log-softmax over full logits, every row through
forward and backward. Same tiny model, same rollouts; the accumulated gradients must match.

The engine here is a thin stand-in for DeepSpeed's (backward accumulates, the optimizer step is
left out) so that gradients can be read: `test_update_deepspeed.py` checks the real engine's step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from paretorl import algos
from paretorl.config import TrialConfig
from paretorl.learner.policy import build_batch
from paretorl.learner.update import rl_step
from paretorl.rollout.types import FINISH_LENGTH, FINISH_STOP, Rollouts

VOCAB, PAD, EOS = 40, 0, 1


class GradEngine:
    """The few engine calls rl_step makes; backward accumulates .grad, step applies nothing."""

    def __init__(self, model, micro: int):
        self.module, self.device, self.micro = model, torch.device("cpu"), micro

    def __call__(self, **kw):
        return self.module(**kw)

    def train_micro_batch_size_per_gpu(self) -> int:
        return self.micro

    def set_gradient_accumulation_boundary(self, flag) -> None:
        pass

    def backward(self, loss, scale_wrt_gas=True) -> None:
        loss.backward()

    def step(self) -> None:
        pass


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, pad_token_id=PAD, eos_token_id=EOS)
    return LlamaForCausalLM(config)


def make_batch(seed: int = 0):
    """4 prompts x 4 samples: one all-correct group, one all-wrong, two mixed; lengths 1..9, one truncated."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(2, VOCAB, size=k).tolist() for k in (3, 5, 2, 7)]
    lengths = rng.integers(1, 10, size=16)
    lengths[5] = 9
    tokens = np.full((16, 9), PAD, dtype=np.int64)
    logprobs = np.zeros((16, 9), dtype=np.float32)
    reasons = []
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(2, VOCAB, size=n)
        truncated = i == 5
        if not truncated:
            tokens[i, n - 1] = EOS
        logprobs[i, :n] = -rng.random(n)
        reasons.append(FINISH_LENGTH if truncated else FINISH_STOP)
    correct = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 1, 1, 1], dtype=bool)
    rollouts = Rollouts(tokens=tokens, logprobs=logprobs, lengths=lengths.astype(np.int64), finish_reasons=reasons, n=4, version=3)
    return prompts, rollouts, correct


def reference_grads(model, ref_model, prompts, rollouts, correct, cfg: TrialConfig) -> dict[str, torch.Tensor]:
    """The plain way: full batch, separate old forward, every row, full log-softmax."""
    a, t = cfg.algo, cfg.train
    g, n = len(prompts), t.samples_per_prompt
    lengths = torch.as_tensor(rollouts.lengths).view(g, n)
    truncated = torch.as_tensor(rollouts.truncated).view(g, n)
    rewards = algos.length_penalized_reward(torch.as_tensor(correct).view(g, n) & ~truncated, lengths, truncated, a.alpha)
    adv = algos.normalize_advantages(algos.compute_advantages(rewards, a.objective), a.normalization, rewards).flatten()
    batch = build_batch([p for p in prompts for _ in range(n)], [rollouts.response(i) for i in range(g * n)], PAD)

    def logprobs(m):
        logits = m(input_ids=batch.input_ids, attention_mask=batch.attention).logits
        logits = torch.gather(logits, 1, batch.resp_index.unsqueeze(-1).expand(-1, -1, VOCAB)).float() / t.temperature
        return torch.log_softmax(logits, -1).gather(2, batch.resp_ids.unsqueeze(-1)).squeeze(-1) * batch.mask

    with torch.no_grad():
        old = logprobs(model)
        ref = logprobs(ref_model) if ref_model is not None else None
    in_loss = a.kl_coef > 0 and a.kl_placement == "loss"
    tok_adv = algos.token_advantages(adv, batch.mask, kl_coef=a.kl_coef, kl_placement=a.kl_placement, logprobs=old, ref_logprobs=ref, kl_estimator=a.kl_estimator)
    rows = g * n
    mini = rows // t.updates_per_step
    perm = torch.randperm(rows, generator=torch.Generator().manual_seed(t.seed * 100_003 + int(rollouts.version)))
    model.zero_grad()
    current = logprobs(model)
    for start in range(0, rows, mini):
        idx = perm[start : start + mini]
        norm = algos.loss_normalizer(a.aggregation, batch.mask[idx], t.max_new_tokens)
        loss, _ = algos.policy_loss(current[idx], old[idx], tok_adv[idx], batch.mask[idx], clip_eps=a.clip_eps, aggregation=a.aggregation,
                                    ref_logprobs=ref[idx] if in_loss else None, kl_coef=a.kl_coef if in_loss else 0.0,
                                    kl_estimator=a.kl_estimator, normalizer=norm, max_new_tokens=t.max_new_tokens)
        loss.backward(retain_graph=True)
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def ours_grads(model, ref_model, prompts, rollouts, correct, cfg: TrialConfig):
    model.zero_grad()
    metrics = rl_step(GradEngine(model, cfg.train.micro_batch_size), ref_model, prompts, rollouts, correct, cfg, PAD, step=1)
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for k, p in model.named_parameters()}, metrics


def trial_cfg(**algo) -> TrialConfig:
    train = {"samples_per_prompt": 4, "prompts_per_step": 4, "micro_batch_size": 3, "max_new_tokens": 9, "temperature": 0.8}
    train.update(algo.pop("train", {}))
    return TrialConfig.model_validate({"algo": algo, "train": train})


def assert_same(ours, ref):
    for key in ref:
        scale = ref[key].abs().max().item() + 1e-12
        assert torch.allclose(ours[key], ref[key], rtol=1e-4, atol=1e-6 * scale + 1e-9), (key, (ours[key] - ref[key]).abs().max().item(), scale)


@pytest.mark.parametrize("aggregation", algos.AGGREGATIONS)
@pytest.mark.parametrize("objective", algos.OBJECTIVES)
def test_skipping_zero_advantage_rows_leaves_the_gradient_unchanged(objective, aggregation):
    prompts, rollouts, correct = make_batch()
    cfg = trial_cfg(objective=objective, aggregation=aggregation, alpha=0.2)
    model = tiny_model()
    ref = reference_grads(model, None, prompts, rollouts, correct, cfg)
    ours, metrics = ours_grads(model, None, prompts, rollouts, correct, cfg)
    assert metrics["train/zero_adv_groups_frac"] >= 0.25
    assert metrics["train/all_correct_groups_frac"] == 0.25  # group 0; group 1 is all wrong (its one truncated answer counts as wrong)
    assert metrics["train/rows_computed_frac"] <= 0.75  # the all-correct and all-wrong groups were not computed
    assert_same(ours, ref)


@pytest.mark.parametrize("placement, estimator", [("reward", "k1"), ("loss", "k3"), ("loss", "k2")])
def test_kl_terms_compute_every_row_and_match(placement, estimator):
    prompts, rollouts, correct = make_batch(1)
    cfg = trial_cfg(objective="maxrl", kl_coef=0.05, kl_placement=placement, kl_estimator=estimator)
    model, reference = tiny_model(), tiny_model(seed=7)  # a reference unlike the policy: the KL matters
    ref = reference_grads(model, reference, prompts, rollouts, correct, cfg)
    ours, metrics = ours_grads(model, reference, prompts, rollouts, correct, cfg)
    assert metrics["train/rows_computed_frac"] == 1.0  # with a KL term every row has a gradient
    assert metrics["train/kl"] > 0.0  # logged in either placement
    assert_same(ours, ref)


def test_several_updates_per_batch_use_the_old_log_probs():
    prompts, rollouts, correct = make_batch(2)
    cfg = trial_cfg(objective="grpo", train={"updates_per_step": 2})
    model = tiny_model()
    ref = reference_grads(model, None, prompts, rollouts, correct, cfg)
    ours, _ = ours_grads(model, None, prompts, rollouts, correct, cfg)
    assert_same(ours, ref)


def test_a_batch_without_signal_still_steps_and_logs_zero_loss():
    prompts, rollouts, _ = make_batch()
    cfg = trial_cfg(objective="grpo")
    model = tiny_model()
    grads, metrics = ours_grads(model, None, prompts, rollouts, np.zeros(16, dtype=bool), cfg)
    assert all(float(g.abs().sum()) == 0.0 for g in grads.values())
    assert metrics["train/pg_loss"] == 0.0 and metrics["train/rows_computed_frac"] == 0.0
    assert np.isfinite(metrics["rollout/logprob_abs_diff"])  # the placeholder row still measures the sampler's drift


def test_pg_loss_is_the_batch_loss_not_a_mean_over_micro_batches():
    prompts, rollouts, correct = make_batch()
    cfg = trial_cfg(objective="rloo", alpha=0.1)
    model = tiny_model()
    _, metrics = ours_grads(model, None, prompts, rollouts, correct, cfg)
    # on-policy the surrogate's value is -(sum of token advantages) / normaliser
    g, n = 4, 4
    truncated = torch.as_tensor(rollouts.truncated).view(g, n)
    rewards = algos.length_penalized_reward(torch.as_tensor(correct).view(g, n) & ~truncated, torch.as_tensor(rollouts.lengths).view(g, n), truncated, 0.1)
    adv = algos.compute_advantages(rewards, "rloo").flatten().double()
    lengths = torch.as_tensor(rollouts.lengths).double()
    expected = -(adv * lengths).sum() / lengths.sum()
    assert metrics["train/pg_loss"] == pytest.approx(float(expected), abs=1e-6)


def test_a_token_bound_cuts_micro_batches_and_leaves_the_gradient_unchanged():
    """`train.max_tokens_per_micro_batch`: every micro-batch's padded tokens (rows x width) stay
    under the bound (a row wider than it goes alone), and the gradient is the unbounded one."""
    prompts, rollouts, correct = make_batch()
    grads, shapes = {}, {}
    for bound in (None, 24):
        cfg = trial_cfg(objective="grpo", alpha=0.2, train={"micro_batch_size": 16, "max_tokens_per_micro_batch": bound})
        model = tiny_model()
        seen = shapes[bound] = []
        model.model.register_forward_pre_hook(lambda m, args, kw: seen.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
        grads[bound], _ = ours_grads(model, None, prompts, rollouts, correct, cfg)
    assert len(shapes[None]) == 1  # 16 rows fit one micro-batch by rows
    assert len(shapes[24]) > 2 and all(rows * width <= 24 or rows == 1 for rows, width in shapes[24]), shapes[24]
    assert sum(rows for rows, _ in shapes[24]) == shapes[None][0][0]  # the same rows, cut differently
    assert_same(grads[24], grads[None])
    assert_same(grads[24], reference_grads(tiny_model(), None, prompts, rollouts, correct, cfg))
