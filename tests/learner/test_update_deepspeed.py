"""The update on real DeepSpeed engines (CPU accelerator), in a subprocess each (DeepSpeed
initialises torch.distributed for the whole process):

- ZeRO-2, fp32: one `rl_step` (zero-advantage rows skipped, one forward per row, several
  micro-batches) moves the weights exactly as the plain update does (separate old forward, every
  row, torch Adam, the same gradient clipping);
- ZeRO-3, bf16: the reference model is built in the policy's dtype and sharded like it, so at
  step 0 (policy == reference) the logged KL is exactly 0, and an update with the KL in the loss runs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT, env_with_venv

PRELUDE = textwrap.dedent(
    """
    import os, socket, sys
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed, tempfile, torch
    sys.path.insert(0, os.getcwd())
    from tests.learner.test_update import PAD, make_batch, reference_grads, tiny_model, trial_cfg
    from paretorl.learner.policy import make_engine, make_reference
    from paretorl.learner.update import rl_step
    from paretorl.models.build import save_policy
    deepspeed.init_distributed(dist_backend="gloo")
    """
)

ZERO2 = PRELUDE + textwrap.dedent(
    """
    prompts, rollouts, correct = make_batch()
    cfg = trial_cfg(objective="grpo", alpha=0.2, train={"lr": 1e-2, "grad_clip": 0.5, "zero_stage": 2, "micro_batch_size": 3})
    ours, plain = tiny_model(), tiny_model()
    engine = make_engine(ours, cfg.train, 16, 1)
    metrics = rl_step(engine, None, prompts, rollouts, correct, cfg, PAD, step=1)
    assert metrics["train/rows_computed_frac"] <= 0.75, metrics

    reference_grads(plain, None, prompts, rollouts, correct, cfg)  # leaves .grad on `plain`
    torch.nn.utils.clip_grad_norm_(plain.parameters(), cfg.train.grad_clip)
    torch.optim.Adam(plain.parameters(), lr=cfg.train.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0).step()
    worst = max((p - q).abs().max().item() for p, q in zip(ours.parameters(), plain.parameters()))
    moved = max((p - q).abs().max().item() for p, q in zip(plain.parameters(), tiny_model().parameters()))
    assert moved > 1e-3 and worst < 1e-4, (worst, moved)  # Adam moves every weight ~lr: a differing gradient shows
    print("ZERO2-SAME-UPDATE", worst, moved)
    """
)

ZERO3 = PRELUDE + textwrap.dedent(
    """
    prompts, rollouts, correct = make_batch(1)
    cfg = trial_cfg(objective="maxrl", kl_coef=0.05, kl_placement="loss", train={"zero_stage": 3, "bf16": True, "micro_batch_size": 8})
    with tempfile.TemporaryDirectory() as base:
        from transformers import PreTrainedTokenizerFast
        from tokenizers import Tokenizer, models
        model = tiny_model()
        model.save_pretrained(base, safe_serialization=True)
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({str(i): i for i in range(40)}, unk_token="0")), pad_token="0")
        tok.save_pretrained(base)
        engine = make_engine(model, cfg.train, 16, 1)
        ref = make_reference(base, engine, cfg.train, 1)
        assert next(ref.module.parameters()).dtype == torch.bfloat16
        assert next(ref.module.parameters()).numel() == 0, "the reference should be sharded by ZeRO-3"
        metrics = rl_step(engine, ref, prompts, rollouts, correct, cfg, PAD, step=1)
        assert metrics["train/kl"] == 0.0, metrics  # same weights, same dtype: no rounding KL
        assert metrics["train/rows_computed_frac"] == 1.0
        metrics = rl_step(engine, ref, prompts, rollouts, correct, cfg, PAD, step=2)
        assert metrics["train/kl"] > 0.0, metrics  # the policy moved away from the reference
    print("ZERO3-REFERENCE-OK")
    """
)


def run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env_with_venv(), capture_output=True, text=True, timeout=600)


def test_zero2_update_equals_the_plain_update():
    proc = run(ZERO2)
    assert proc.returncode == 0 and "ZERO2-SAME-UPDATE" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_zero3_reference_is_sharded_in_the_policy_dtype():
    proc = run(ZERO3)
    assert proc.returncode == 0 and "ZERO3-REFERENCE-OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
