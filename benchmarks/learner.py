"""Learner throughput: one RL update as trials run it, against a plain PyTorch loop and TRL.

Same model, same batch of real rollouts, same process, runs interleaved and medians reported:

  default  the main job's tiny Llama, SFT'd on arith (the default sweep's base policy), at the
           default sweep's batch: 16 prompts x 8 samples, up to 64 new tokens
  smollm2  SmolLM2-135M-Instruct on wordproblems at the `cpu-small` profile's batch: 4 prompts x
           4 samples, up to 96 new tokens

Systems, each doing one full update (log-probs, loss, backward, optimizer step) of the batch:

  ours    `paretorl.learner.update.rl_step` on a DeepSpeed engine, as trials run it, with the
          default search space's first initial point (KL 0; `--kl` adds an arm with KL in the reward,
          where no row can be skipped); bf16 autocast as `train.autocast: auto` decides, and a
          second row with the other choice, so both are measured
  naive   a plain PyTorch loop as a user writes it first: the HF model on the whole padded batch,
          a separate no-grad forward for the old log-probs, forward and backward on every row,
          log-softmax over full logits, torch.optim.AdamW
  trl     TRL's GRPOTrainer.compute_loss and its optimizer step on the same batch, when `trl` is
          installed (`pip install -e ".[trl]"`); otherwise null, with a note

Prints a table, then as its LAST line a JSON list with one object per model:
  {"model", "rows", "ours_s", "naive_s", "trl_s", "ratio_vs_naive", "ratio_vs_trl",
   "rows_computed", "zero_adv_groups", "autocast_bf16"}

  python benchmarks/learner.py                        # both models, 1 thread, as trials run
  python benchmarks/learner.py --models default --repeats 3 --kl
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))

SETUPS = {
    "default": {"space": "searchspaces/default.yaml", "profile": None, "task": "arith"},
    "smollm2": {"space": "searchspaces/smollm2.yaml", "profile": "cpu-small", "task": "wordproblems"},
}


def init_single_process_group() -> None:
    """DeepSpeed needs torch.distributed: a one-process gloo group on a free local port."""
    import deepspeed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="gloo")


def prepare_setup(name: str, cache_dir: Path, work: Path):
    """(trial config, base model dir, task, training rows) for a model, as the sweep builds them."""
    from paretorl.sweep.profiles import load_profile
    from paretorl.sweep.run import prepare
    from paretorl.search.space import load_space
    from paretorl.tasks import load_task, read_rows

    spec = SETUPS[name]
    space = load_space(REPO / spec["space"], load_profile(spec["profile"]) if spec["profile"] else None)
    prep = prepare(space, spec["task"], work / name, cache_dir)
    cfg = space.trial_config(space.initial_points[0] if space.initial_points else {}, {"task": {"name": spec["task"]}})
    task = load_task(cfg.task.name, **cfg.task.kwargs)
    rows = read_rows(prep.shared["train"])[: cfg.train.prompts_per_step]
    return cfg, prep.shared["base_model"], task, rows


def sample_batch(cfg, base_dir: str, task, rows, threads: int):
    """Real rollouts of the base policy (embedded engine, as trials sample) and their verdicts."""
    from paretorl.evaluate.passk_eval import score_rollouts
    from paretorl.models.build import load_policy
    from paretorl.models.tokenizer import encode_prompt
    from paretorl.rollout.engine import EmbeddedEngine
    from paretorl.rollout.types import SamplingParams

    model, tokenizer = load_policy(base_dir)
    engine = EmbeddedEngine(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype=cfg.rollout.dtype, threads=threads)
    prompts = [encode_prompt(tokenizer, row["prompt"]) for row in rows]
    params = SamplingParams(n=cfg.train.samples_per_prompt, max_new_tokens=cfg.train.max_new_tokens, temperature=cfg.train.temperature, seed=1)
    rollouts = engine.generate(prompts, params)
    rollouts.version = 0
    return tokenizer, prompts, rollouts, score_rollouts(task, rows, rollouts, tokenizer)


class Ours:
    """The trial's update: `rl_step` on a DeepSpeed engine (ZeRO as configured, CPU accelerator)."""

    def __init__(self, cfg, base_dir: str, batch):
        from paretorl.learner.policy import make_engine, make_reference, resolve_autocast
        from paretorl.models.build import load_policy

        self.cfg, (self.tokenizer, self.prompts, self.rollouts, self.correct) = cfg, batch
        model, _ = load_policy(base_dir)
        self.autocast = resolve_autocast(cfg.train.autocast, model, cfg.train)
        rows = len(self.prompts) * cfg.train.samples_per_prompt
        self.engine = make_engine(model, cfg.train, rows // cfg.train.updates_per_step, 1)
        self.ref = make_reference(base_dir, self.engine, cfg.train, 1) if cfg.algo.kl_coef > 0 else None
        self.metrics: dict = {}

    def update(self) -> None:
        from paretorl.learner.update import rl_step

        self.metrics = rl_step(self.engine, self.ref, self.prompts, self.rollouts, self.correct, self.cfg, self.tokenizer.pad_token_id, 1, autocast=self.autocast)


class Naive:
    """A plain PyTorch update, written the way a user writes it first."""

    def __init__(self, cfg, base_dir: str, batch):
        import torch

        from paretorl import algos
        from paretorl.learner.policy import build_batch
        from paretorl.models.build import load_policy

        self.cfg, (tokenizer, prompts, rollouts, correct) = cfg, batch
        self.model, _ = load_policy(base_dir)
        self.ref = load_policy(base_dir)[0].eval() if cfg.algo.kl_coef > 0 else None
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr, weight_decay=0.0)
        g, n = len(prompts), cfg.train.samples_per_prompt
        truncated = torch.as_tensor(rollouts.truncated).view(g, n)
        rewards = algos.length_penalized_reward(torch.as_tensor(correct).view(g, n) & ~truncated, torch.as_tensor(rollouts.lengths).view(g, n), truncated, cfg.algo.alpha)
        self.adv = algos.compute_advantages(rewards, cfg.algo.objective).flatten()
        self.batch = build_batch([p for p in prompts for _ in range(n)], [rollouts.response(i) for i in range(g * n)], tokenizer.pad_token_id)

    def _logprobs(self, model):
        import torch

        b, temperature = self.batch, self.cfg.train.temperature
        logits = model(input_ids=b.input_ids, attention_mask=b.attention).logits
        logits = torch.gather(logits, 1, b.resp_index.unsqueeze(-1).expand(-1, -1, logits.shape[-1])) / temperature
        return torch.log_softmax(logits.float(), -1).gather(2, b.resp_ids.unsqueeze(-1)).squeeze(-1)

    def update(self) -> None:
        import torch

        a, mask = self.cfg.algo, self.batch.mask.float()
        with torch.no_grad():
            old = self._logprobs(self.model)
            ref = self._logprobs(self.ref) if self.ref is not None else None
        adv = self.adv[:, None] * mask
        if ref is not None:  # the KL (k1) as a per-token reward, summed from t on
            adv = adv - a.kl_coef * ((old - ref) * mask).flip(-1).cumsum(-1).flip(-1)
        logprobs = self._logprobs(self.model)
        ratio = torch.exp(logprobs - old)
        loss = -(torch.minimum(ratio * adv, ratio.clamp(1 - a.clip_eps, 1 + a.clip_eps) * adv) * mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def make_trl(cfg, base_dir: str, batch):
    """TRL's GRPOTrainer on the same batch, or None with the reason when TRL is not installed."""
    try:
        from trl_adapter import TRLUpdate  # benchmarks/trl_adapter.py: kept apart, it follows TRL's internals
    except ImportError as e:
        return None, f"TRL not available ({e}); `pip install -e '.[trl]'` adds it"
    return TRLUpdate(cfg, base_dir, batch), None


def bench(name: str, args, work: Path) -> tuple[dict, list[list[str]]]:
    import torch

    cfg, base_dir, task, rows = prepare_setup(name, Path(args.cache_dir), work)
    batch = sample_batch(cfg, base_dir, task, rows, args.threads)
    torch.set_num_threads(args.threads)
    systems = {"ours": Ours(cfg, base_dir, batch), "naive": Naive(cfg, base_dir, batch)}
    other = "off" if systems["ours"].autocast else "bf16"  # bf16 autocast measured both ways: the other choice too
    other_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"autocast": other})})
    systems[f"ours, autocast {other}"] = Ours(other_cfg, base_dir, batch)
    if args.kl:
        kl_cfg = cfg.model_copy(update={"algo": cfg.algo.model_copy(update={"kl_coef": 1e-3, "kl_placement": "reward", "kl_estimator": "k1"})})
        systems["ours, KL in reward"] = Ours(kl_cfg, base_dir, batch)
        systems["naive, KL in reward"] = Naive(kl_cfg, base_dir, batch)
    trl, note = (None, "skipped (--no-trl)") if args.no_trl else make_trl(cfg, base_dir, batch)
    if trl is not None:
        systems["trl"] = trl
    times: dict[str, list[float]] = {k: [] for k in systems}
    for rep in range(args.repeats + 1):  # the first round warms up (kernel choice, allocator)
        for key, system in systems.items():
            started = time.perf_counter()
            system.update()
            if rep:
                times[key].append(time.perf_counter() - started)
    med = {k: statistics.median(v) for k, v in times.items()}
    rollouts = batch[2]
    metrics = systems["ours"].metrics
    result = {
        "model": name,
        "rows": len(rollouts.lengths),
        "ours_s": round(med["ours"], 4),
        "naive_s": round(med["naive"], 4),
        "trl_s": round(med["trl"], 4) if "trl" in med else None,
        "ratio_vs_naive": round(med["naive"] / med["ours"], 2),
        "ratio_vs_trl": round(med["trl"] / med["ours"], 2) if "trl" in med else None,
        "rows_computed": round(metrics["train/rows_computed_frac"] * len(rollouts.lengths)),
        "zero_adv_groups": metrics["train/zero_adv_groups_frac"],
        "autocast_bf16": systems["ours"].autocast,
    }
    if args.kl:
        result["ratio_vs_naive_kl"] = round(med["naive, KL in reward"] / med["ours, KL in reward"], 2)
    table = [[name, key, f"{med[key]:.3f}", f"{med['naive'] / med[key]:.2f}x" if "KL" not in key else f"{med['naive, KL in reward'] / med[key]:.2f}x"] for key in systems]
    if note:
        table.append([name, "trl", "-", note])
    lengths = rollouts.lengths
    print(f"[{name}] {result['rows']} rows, response tokens mean {lengths.mean():.1f} max {lengths.max()}, "
          f"zero-advantage groups {result['zero_adv_groups']:.0%}, rows computed by ours {result['rows_computed']}, "
          f"bf16 autocast {'on' if result['autocast_bf16'] else 'off'}", flush=True)
    return result, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="default,smollm2", help="comma-separated: default, smollm2 (default: both)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every system (default 1, as trials run)")
    ap.add_argument("--repeats", type=int, default=5, help="timed updates per system (median reported), after one warm-up round")
    ap.add_argument("--kl", action="store_true", help="also time an arm with KL in the reward (no row can be skipped)")
    ap.add_argument("--no-trl", action="store_true", help="skip TRL even when it is installed")
    ap.add_argument("--cache-dir", default=os.environ.get("PARETORL_CACHE", str(Path.home() / ".cache" / "paretorl")), help="base-policy cache (SFT, converted SmolLM2)")
    args = ap.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    init_single_process_group()
    results, table = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            result, rows = bench(name.strip(), args, Path(tmp))
            results.append(result)
            table += rows
    print(f"\n{'model':<8} {'system':<22} {'update s':>9}  vs naive")
    for row in table:
        print(f"{row[0]:<8} {row[1]:<22} {row[2]:>9}  {row[3]}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
