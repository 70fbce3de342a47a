"""The learner benchmark's TRL system trains on exactly our batch (skipped without the `trl` extra).

TRL itself builds the inputs its loss reads (from rollouts handed over, nothing generated); here
we check those numbers against the batch, and that one update moves the weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from paretorl.config import TrialConfig  # noqa: E402
from paretorl.models.build import build_model, save_policy  # noqa: E402
from paretorl.models.tokenizer import build_tokenizer  # noqa: E402
from paretorl.rollout.types import FINISH_LENGTH, FINISH_STOP, Rollouts  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from trl_adapter import TRLUpdate  # noqa: E402

N = 4
CORRECT = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1], dtype=bool)  # all right, all wrong, mixed


def make_setup(tmp_path):
    tok = build_tokenizer(["1+2=3", "hello world", "what is 7*6? 42"] * 50, vocab_size=300)
    cfg = TrialConfig.model_validate({
        "model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2, "max_len": 64},
        "train": {"samples_per_prompt": N, "prompts_per_step": 3, "max_new_tokens": 8, "temperature": 0.8, "lr": 1e-2},
        "eval": {"max_new_tokens": 8},
    })
    base = save_policy(build_model(cfg.model, tok), tok, tmp_path / "base")
    rng = np.random.default_rng(0)
    prompts = [[tok.bos_token_id, *rng.integers(4, len(tok), size=k).tolist(), tok.sep_token_id] for k in (2, 5, 3)]
    lengths = rng.integers(1, 9, size=3 * N)
    lengths[7] = 8  # one truncated row: no EOS
    tokens = np.full((3 * N, 8), tok.pad_token_id, dtype=np.int64)
    reasons = []
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(4, len(tok), size=n)
        if i != 7:
            tokens[i, n - 1] = tok.eos_token_id
        reasons.append(FINISH_LENGTH if i == 7 else FINISH_STOP)
    logprobs = np.where(tokens != tok.pad_token_id, -0.5, 0.0).astype(np.float32)
    rollouts = Rollouts(tokens=tokens, logprobs=logprobs, lengths=lengths.astype(np.int64), finish_reasons=reasons, n=N)
    return cfg, str(base), (tok, prompts, rollouts, CORRECT)


def test_trl_update_trains_on_exactly_our_batch(tmp_path):
    cfg, base, batch = make_setup(tmp_path)
    tok, prompts, rollouts, correct = batch
    system = TRLUpdate(cfg, base, batch)
    x = system.inputs

    # prompts left-padded, completions right-padded, both as we sampled them
    for i in range(3 * N):
        p, r = prompts[i // N], rollouts.response(i)
        assert x["prompt_ids"][i, -len(p):].tolist() == p and x["prompt_mask"][i].sum() == len(p)
        assert x["completion_ids"][i, : len(r)].tolist() == r and x["completion_mask"][i].sum() == len(r)
    assert x["prompt_mask"][0, 0] == 0  # the shortest prompt has padding on its left

    # TRL's group rule: (r - mean) / (std + 1e-4), unbiased std; all-equal groups get 0
    std = np.std([1, 0, 0, 1], ddof=1)
    expected = np.r_[np.zeros(8), np.array([0.5, -0.5, -0.5, 0.5]) / (std + 1e-4)]
    assert np.allclose(x["advantages"].numpy(), expected, atol=1e-6)

    before = {k: p.detach().clone() for k, p in system.trainer.model.named_parameters()}
    system.update()
    # dapo at ratio 1: minus the token-weighted mean advantage over the batch's completion tokens
    lengths = rollouts.lengths.astype(float)
    assert system.loss == pytest.approx(-(expected * lengths).sum() / lengths.sum(), rel=1e-5)
    moved = [k for k, p in system.trainer.model.named_parameters() if not torch.equal(p, before[k])]
    assert moved, "TRL's optimizer step changed no weight"
    assert all(p.grad is None for p in system.trainer.model.parameters())
