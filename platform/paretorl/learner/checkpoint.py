"""Trial checkpoints: everything a retried or resumed trial needs to continue exactly.

    model.safetensors, config.json, tokenizer files   the policy (HF format: vLLM and users load it)
      or, for a LoRA trial, adapter_config.json and    PEFT's adapter folder; its config names the
      adapter_model.safetensors (+ tokenizer files)    base policy (base_model_name_or_path)
    trial_state.json                                  step, policy version, data-stream position,
                                                      last evaluation, Python/NumPy RNG states
    rng-rank<r>.safetensors                           torch's RNG state of each learner rank
    deepspeed/state/                                  optimizer state, in DeepSpeed's own format

The policy and the loop state are safetensors and JSON. The optimizer state is DeepSpeed's
checkpoint (torch pickles): it is written and read only by the trial itself, inside the
sweep folder, when Ray Train retries a trial or `--resume` continues a sweep.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from paretorl.learner.policy import gathered_state_dict
from paretorl.models.lora import adapter_of, is_lora_model

STATE_FILE = "trial_state.json"
DS_DIR, DS_TAG = "deepspeed", "state"


def save(out_dir: Path, engine, model, tokenizer, state: dict, rank: int) -> None:
    """Write this rank's part of a checkpoint into `out_dir` (every rank calls it)."""
    lora = is_lora_model(model)
    # collective over ranks; a LoRA trial's frozen base is the base policy's folder, not saved again
    engine.save_checkpoint(str(out_dir / DS_DIR), tag=DS_TAG, exclude_frozen_parameters=lora)
    save_file({"torch": torch.get_rng_state()}, str(out_dir / f"rng-rank{rank}.safetensors"))
    if lora:
        if rank == 0:
            adapter_of(model).save(out_dir)
    else:
        weights = gathered_state_dict(model, rank)  # collective under ZeRO-3 (the module holds shards); None off rank 0
        if rank == 0:
            model.save_pretrained(out_dir, state_dict=weights, safe_serialization=True)
    if rank == 0:
        tokenizer.save_pretrained(out_dir)
        rng = {"python": _jsonable(random.getstate()), "numpy": _jsonable(np.random.get_state())}
        (out_dir / STATE_FILE).write_text(json.dumps({**state, "rng": rng}, indent=2))


def read_state(ckpt_dir: Path) -> dict:
    return json.loads((Path(ckpt_dir) / STATE_FILE).read_text())


def restore(ckpt_dir: Path, engine, rank: int) -> dict:
    """Load optimizer and RNG states into a freshly built engine; returns the loop state."""
    ckpt_dir = Path(ckpt_dir)
    state = read_state(ckpt_dir)
    strict = not is_lora_model(engine.module)  # a LoRA checkpoint holds the adapters only
    loaded, _ = engine.load_checkpoint(str(ckpt_dir / DS_DIR), tag=DS_TAG, load_module_strict=strict, load_optimizer_states=True)
    if loaded is None:
        raise FileNotFoundError(f"{ckpt_dir / DS_DIR}: no DeepSpeed state to resume the optimizer from")
    rng_file = ckpt_dir / f"rng-rank{rank}.safetensors"
    if rng_file.exists():  # absent only if the world size changed between attempts
        torch.set_rng_state(load_file(str(rng_file))["torch"])
    random.setstate(_tuples(state["rng"]["python"]))
    kind, keys, pos, has_gauss, cached = state["rng"]["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    return state


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, list)):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _tuples(obj):
    return tuple(_tuples(x) for x in obj) if isinstance(obj, list) else obj
