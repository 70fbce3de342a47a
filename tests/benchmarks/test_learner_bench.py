"""The learner benchmark (`benchmarks/learner.py`) on a tiny policy: the TRL column without TRL,
and the LoRA arm's learner (peak memory and published bytes, measured in a fresh process)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from tests.benchmarks.tiny_batch import make_setup

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import learner as bench  # noqa: E402  (benchmarks/learner.py)


def test_trl_column_is_null_with_a_note_without_trl(tmp_path, monkeypatch):
    """An install without the `trl` extra (no trl, no datasets): no TRL system, and the note says why."""
    for name in ("trl", "datasets"):
        monkeypatch.setitem(sys.modules, name, None)  # `import trl` now raises ImportError, as when it is not installed
    monkeypatch.delitem(sys.modules, "trl_adapter", raising=False)  # imported afresh, under the missing packages
    cfg, base, batch = make_setup(tmp_path)
    system, note = bench.make_trl(cfg, base, batch)
    assert system is None
    assert "TRL not available" in note and "pip install -e '.[trl]'" in note


def test_lora_learner_publishes_only_its_adapters(tmp_path):
    """Each arm's learner in its own process: the full arm publishes every weight, the LoRA arm
    (rank 16 on every linear layer) only r * (in + out) numbers per adapted layer."""
    from paretorl.config import LoraSettings
    from paretorl.models.build import load_policy
    from paretorl.models.lora import LLAMA_LINEARS

    cfg, base, batch = make_setup(tmp_path)
    full_cfg = bench.variant(cfg, algo=bench.KL)
    lora_cfg = bench.variant(full_cfg, model={"lora": LoraSettings(**bench.LORA)})
    full_peak, full_bytes = bench.in_fresh_process(bench.learner_peak, full_cfg.model_dump(), base, batch, 1)
    lora_peak, lora_bytes = bench.in_fresh_process(bench.learner_peak, lora_cfg.model_dump(), base, batch, 1)

    model, _ = load_policy(base)
    weights = {p.data_ptr(): p.numel() * 4 for p in model.parameters()}  # fp32; tied weights count once
    linears = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LLAMA_LINEARS]
    assert len(linears) == 7 * cfg.model.num_layers
    assert full_bytes == sum(weights.values())
    assert lora_bytes == sum(bench.LORA["rank"] * (m.in_features + m.out_features) * 4 for m in linears)
    assert 100 < lora_peak < 8192 and 100 < full_peak < 8192  # MiB: the spawned learner's own peak, not this process's
