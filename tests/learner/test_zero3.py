"""DeepSpeed ZeRO-3 + bf16 + activation checkpointing (profiles/gpu-zero3.yaml) through the
learner's own pieces, on DeepSpeed's CPU accelerator: an update happens, and the weights the
learner publishes and checkpoints are whole although ZeRO-3 keeps only shards in the module.

In a subprocess: DeepSpeed initialises torch.distributed for the whole process. ~1 min.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT, env_with_venv

SCRIPT = textwrap.dedent(
    """
    import os, socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    import deepspeed, torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from paretorl.config import TrainConfig
    from paretorl.learner.policy import build_batch, gathered_state_dict, make_engine, token_logprobs

    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(zero_stage=3, bf16=True, activation_checkpointing=True, micro_batch_size=4, lr=1e-2)
    engine = make_engine(model, cfg, 4, 1)
    assert model.is_gradient_checkpointing and model.training  # make_engine trains in training mode: checkpointing recomputes
    assert next(model.parameters()).numel() == 0, "ZeRO-3 should leave only placeholders in the module"
    batch = build_batch([[1, 2, 3]] * 4, [[4, 5, 6, 7]] * 4, 0)
    logprobs, _ = token_logprobs(engine, batch, 1.0)
    assert logprobs.device == batch.mask.device and logprobs.shape == (4, 4)
    engine.backward(-logprobs.sum() / batch.mask.sum(), scale_wrt_gas=False)
    engine.step()
    after = gathered_state_dict(model)
    assert set(after) == set(before)
    assert all(after[k].shape == before[k].shape and after[k].device.type == "cpu" for k in before)
    changed = sum(not torch.equal(after[k].float(), before[k].float()) for k in before)
    assert changed == len(before), f"only {changed} of {len(before)} tensors changed"
    print("ZERO3-OK", changed)
    """
)


def test_zero3_bf16_activation_checkpointing_step_and_whole_weights():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env_with_venv(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "ZERO3-OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]
