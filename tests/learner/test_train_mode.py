"""The trial's learner module trains in training mode, so activation checkpointing recomputes.

`load_policy` returns an HF model in eval mode (from_pretrained's default), and transformers
checkpoints a decoder layer only when `self.training` is true: a learner left in eval mode stores
every activation although `train.activation_checkpointing` is on. Here the learner is built as a
trial builds it (`learner/loop.py:_policy`: load_policy -> make_engine) on DeepSpeed's CPU
accelerator, and a decoder layer's forward calls are counted: once per micro-batch without
checkpointing, twice with it (the second call is the recomputation inside backward).

The policies here have no dropout (`attention_dropout` 0, Llama has no other), so training mode
changes no number the learner computes. In a subprocess: DeepSpeed initialises torch.distributed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT, env_with_venv

SCRIPT = textwrap.dedent(
    """
    import os, socket, tempfile
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed, torch
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from paretorl.config import TrialConfig
    from paretorl.learner.loop import _policy
    from paretorl.learner.policy import build_batch, token_logprobs

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    base = tempfile.mkdtemp()
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)).save_pretrained(base)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({str(i): i for i in range(64)}, unk_token="0")), pad_token="0")
    tok.save_pretrained(base)

    def layer_calls(checkpointing: bool) -> tuple[bool, float, int, int]:
        cfg = TrialConfig.model_validate({"train": {"activation_checkpointing": checkpointing, "micro_batch_size": 4, "autocast": "off",
                                                    "prompts_per_step": 2, "samples_per_prompt": 2}})
        engine, model, *_ = _policy(cfg, base, None, 1, 0)
        calls = []
        model.model.layers[0].register_forward_pre_hook(lambda *a: calls.append(1))  # a pre-hook: torch stops a recomputation early, before post-hooks
        batch = build_batch([[1, 2, 3]] * 4, [[4, 5, 6, 7]] * 4, 0)
        logprobs, _ = token_logprobs(engine, batch, 1.0)
        forward = len(calls)
        engine.backward(-logprobs.sum() / batch.mask.sum(), scale_wrt_gas=False)
        return model.training, model.config.attention_dropout, forward, len(calls) - forward

    for checkpointing, recomputed in ((False, 0), (True, 1)):
        training, dropout, forward, in_backward = layer_calls(checkpointing)
        assert training, "the learner's module is in eval mode"
        assert dropout == 0.0, dropout
        assert (forward, in_backward) == (1, recomputed), (checkpointing, forward, in_backward)
    print("TRAIN-MODE-OK")
    """
)


def test_learner_trains_in_training_mode_and_checkpointing_recomputes():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env_with_venv(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "TRAIN-MODE-OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
