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

from tests.benchmarks.tiny_batch import N, make_setup  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from trl_adapter import TRLUpdate  # noqa: E402


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
