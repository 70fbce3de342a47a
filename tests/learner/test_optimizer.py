"""The learner's optimizer is torch's AdamW on every device: never DeepSpeed's JIT-built FusedAdam.

On a GPU, DeepSpeed's default Adam is `FusedAdam`, compiled on first use by an nvcc that must
match torch's CUDA; the learner asks for torch's own fused AdamW instead, which ships compiled.
Checked through DeepSpeed's own choice (`DeepSpeedEngine.get_optimizer_configuration`) and by
building the optimizer it would build, on CPU (torch's fused AdamW runs on CPU too).
"""

from __future__ import annotations

import os

import torch

from paretorl.config import TrainConfig
from paretorl.learner.policy import deepspeed_config


def ds_optimizer(on_gpu: bool, monkeypatch):
    """(the class DeepSpeed picks, the keyword arguments it passes) for the learner's config."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: on_gpu)
    monkeypatch.setenv("DS_ACCELERATOR", os.environ.get("DS_ACCELERATOR", "cpu"))
    from deepspeed.runtime.engine import DeepSpeedEngine

    params = dict(deepspeed_config(TrainConfig(), 8, 1)["optimizer"]["params"])
    cls, extra = DeepSpeedEngine.get_optimizer_configuration(None, params, True)  # torch_adam needs no engine state
    return cls, {**params, **extra}


def test_gpu_learner_uses_torch_fused_adamw(monkeypatch):
    cls, kwargs = ds_optimizer(True, monkeypatch)
    assert cls is torch.optim.AdamW and kwargs["fused"] is True
    weight = torch.nn.Parameter(torch.ones(4))
    weight.grad = torch.ones(4)
    cls([weight], **kwargs).step()  # torch accepts every argument DeepSpeed would pass
    assert torch.all(weight < 1)


def test_cpu_learner_keeps_plain_torch_adamw(monkeypatch):
    cls, kwargs = ds_optimizer(False, monkeypatch)
    assert cls is torch.optim.AdamW and "fused" not in kwargs
