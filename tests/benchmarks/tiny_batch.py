"""A tiny saved policy and a hand-made batch of its rollouts, for the learner benchmark's systems."""

from __future__ import annotations

import numpy as np

from paretorl.config import TrialConfig
from paretorl.models.build import build_model, save_policy
from paretorl.models.tokenizer import build_tokenizer
from paretorl.rollout.types import FINISH_LENGTH, FINISH_STOP, Rollouts

N = 4
CORRECT = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1], dtype=bool)  # all right, all wrong, mixed


def make_setup(tmp_path):
    """(trial config, saved base policy's folder, batch) with batch = (tokenizer, 3 prompts,
    their rollouts N each, verdicts CORRECT): the arguments every benchmark system takes."""
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
