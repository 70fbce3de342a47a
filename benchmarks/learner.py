"""Learner throughput: one RL update as trials run it, against a plain PyTorch loop and TRL, and
a LoRA trial's update against a full fine-tune's.

Same model, same batch of real rollouts, same process, runs interleaved and medians reported:

  default  the main job's tiny Llama, SFT'd on arith (the default sweep's base policy), at the
           default sweep's batch: 16 prompts x 8 samples, up to 64 new tokens
  smollm2  SmolLM2-135M-Instruct on wordproblems at the `cpu-small` profile's batch: 4 prompts x
           4 samples, up to 96 new tokens

Systems, each doing one full update (log-probs, loss, backward, optimizer step) of the batch:

  ours    `paretorl.learner.update.rl_step` on a DeepSpeed engine, as trials run it, with the
          default search space's first initial point (KL 0); bf16 autocast as `train.autocast: auto`
          decides, and a second row with the other choice, so both are measured. Two more arms put
          KL in the reward (k1, coefficient 1e-3), where no row can be skipped: the full fine-tune
          (autocast as `auto` decides for it), and a LoRA trial's update with the same autocast
          choice (rank 16 on every linear layer of the decoder, alpha 32: only the adapters train
          and have Adam state; its KL reference is the same module with the adapters off, where
          the full arm loads a second model). `--lora-only` times these two arms alone
  naive   a plain PyTorch loop as a user writes it first: the HF model on the whole padded batch,
          a separate no-grad forward for the old log-probs, forward and backward on every row,
          log-softmax over full logits, torch.optim.AdamW (`--kl`: also with KL in the reward)
  trl     TRL's GRPOTrainer.compute_loss and its optimizer step on the same batch, when `trl` is
          installed (`pip install -e ".[trl]"`); otherwise null, with a note

LoRA against full fine-tune, both with KL in the reward (every row computed):

  lora_s, full_s          update seconds (median of the interleaved runs above)
  lora_peak_mib, ...      the learner process's peak RSS: each arm runs in a fresh process of its
                          own (spawned; its VmHWM, since ru_maxrss survives exec) that does what a
                          trial's learner does for two steps (load the policy, build the engine and
                          the KL reference, update, publish) and reads its own peak. That
                          includes the interpreter with torch and DeepSpeed loaded, the same in both,
                          and the full arm's second model (its KL reference), a real part of the
                          difference: a LoRA trial has no second copy
  sync_bytes_lora, ...    bytes published after each update (`rollout/sync_bytes`): the adapter
                          tensors, or the full state dict

Prints a table, then as its LAST line a JSON list with one object per model:
  {"model", "rows", "ours_s", "naive_s", "trl_s", "ratio_vs_naive", "ratio_vs_trl",
   "rows_computed", "zero_adv_groups", "autocast_bf16", "lora_rank", "lora_rows_computed",
   "lora_s", "full_s", "lora_speedup", "lora_peak_mib", "full_peak_mib", "sync_bytes_lora",
   "sync_bytes_full"} (and "ratio_vs_naive_kl" with `--kl`)

  python benchmarks/learner.py                        # both models, 1 thread, as trials run
  python benchmarks/learner.py --models default --repeats 3 --kl
  python benchmarks/learner.py --models smollm2 --repeats 3 --lora-only
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

LORA = {"rank": 16, "alpha": 32.0}  # targets left out: every linear layer of the decoder
KL = {"kl_coef": 1e-3, "kl_placement": "reward", "kl_estimator": "k1"}

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


def variant(cfg, **sections):
    """A copy of `cfg` with fields of some sections replaced: variant(cfg, algo={"kl_coef": 0.1})."""
    return cfg.model_copy(update={name: getattr(cfg, name).model_copy(update=fields) for name, fields in sections.items()})


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
    """The trial's update: `rl_step` on a DeepSpeed engine (ZeRO as configured, CPU accelerator),
    of the full model or, with `model.lora.rank` > 0, of LoRA adapters on it."""

    def __init__(self, cfg, base_dir: str, batch):
        from paretorl.learner.policy import make_engine, make_reference, resolve_autocast
        from paretorl.models.build import load_policy
        from paretorl.models.lora import add_adapters

        self.cfg, (self.tokenizer, self.prompts, self.rollouts, self.correct) = cfg, batch
        model, _ = load_policy(base_dir)
        if cfg.model.lora.rank:  # as a LoRA trial builds its policy (learner/loop.py, `_load_policy`)
            model = add_adapters(model, cfg.model.lora, base=base_dir)
        self.autocast = resolve_autocast(cfg.train.autocast, model, cfg.train)
        rows = len(self.prompts) * cfg.train.samples_per_prompt
        self.engine = make_engine(model, cfg.train, rows // cfg.train.updates_per_step, 1)
        self.ref = make_reference(base_dir, self.engine, cfg.train, 1) if cfg.algo.kl_coef > 0 else None
        self.metrics: dict = {}

    def update(self) -> None:
        from paretorl.learner.update import rl_step

        self.metrics = rl_step(self.engine, self.ref, self.prompts, self.rollouts, self.correct, self.cfg, self.tokenizer.pad_token_id, 1, autocast=self.autocast)

    def publish(self) -> int:
        """What a trial publishes after the update, as its `rollout/sync_bytes` counts it."""
        from paretorl.learner.policy import published_weights, weights_nbytes

        return weights_nbytes(published_weights(self.engine.module))


def learner_peak(trial: dict, base_dir: str, batch, threads: int, steps: int = 2) -> tuple[float, int]:
    """(peak RSS in MiB, bytes published per step) of this process running a trial's learner for
    `steps` steps: build it, then update and publish. Meant for a fresh process (`in_fresh_process`);
    `trial` is the config as a dict, validated here as a trial's worker does (`cfg.model_dump()`)."""
    import resource

    import torch

    from paretorl.config import TrialConfig

    cfg = TrialConfig.model_validate(trial)
    init_single_process_group()
    torch.set_num_threads(threads)
    system = Ours(cfg, base_dir, batch)
    for _ in range(steps):  # the first step creates Adam's state: the second holds it and the activations at once
        system.update()
        published = system.publish()
    return _peak_rss_mib(resource), published


def _peak_rss_mib(resource) -> float:
    """This process's own peak RSS. Not ru_maxrss: Linux carries it across exec, so a spawned child
    (fork + exec) starts with its parent's RSS as its peak (both arms read 6870 MiB, the parent's).
    VmHWM is the peak of this process image's own memory."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB on Linux, bytes on macOS


def in_fresh_process(fn, *args):
    """fn(*args) in a spawned process (fork would start it with this process's peak RSS)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


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

    from paretorl.config import LoraSettings

    cfg, base_dir, task, rows = prepare_setup(name, Path(args.cache_dir), work)
    batch = sample_batch(cfg, base_dir, task, rows, args.threads)
    torch.set_num_threads(args.threads)
    systems = {}
    if not args.lora_only:
        systems = {"ours": Ours(cfg, base_dir, batch), "naive": Naive(cfg, base_dir, batch)}
        other = "off" if systems["ours"].autocast else "bf16"  # bf16 autocast measured both ways: the other choice too
        systems[f"ours, autocast {other}"] = Ours(variant(cfg, train={"autocast": other}), base_dir, batch)
    # LoRA against full fine-tune where every row is computed; the LoRA arm (and each arm's fresh
    # learner process) takes the full arm's autocast choice, so the two differ only in LoRA
    full_arm, lora_arm = "ours, KL in reward", f"ours, LoRA r{LORA['rank']}, KL in reward"
    systems[full_arm] = Ours(variant(cfg, algo=KL), base_dir, batch)
    full_cfg = variant(cfg, algo=KL, train={"autocast": "bf16" if systems[full_arm].autocast else "off"})
    lora_cfg = variant(full_cfg, model={"lora": LoraSettings(**LORA)})
    systems[lora_arm] = Ours(lora_cfg, base_dir, batch)
    if args.kl and not args.lora_only:
        systems["naive, KL in reward"] = Naive(full_cfg, base_dir, batch)
    note = None
    if not args.lora_only:
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
    print(f"[{name}] median update s: {json.dumps({k: round(v, 4) for k, v in med.items()})}", flush=True)
    peak, sync = {}, {}
    for arm, arm_cfg in ((full_arm, full_cfg), (lora_arm, lora_cfg)):
        peak[arm], sync[arm] = in_fresh_process(learner_peak, arm_cfg.model_dump(), base_dir, batch, args.threads)

    rollouts = batch[2]
    count = len(rollouts.lengths)

    def seconds(key: str) -> float | None:
        return round(med[key], 4) if key in med else None

    def ratio(slower: str, faster: str) -> float | None:
        return round(med[slower] / med[faster], 2) if slower in med and faster in med else None

    ours = systems.get("ours")
    result = {
        "model": name,
        "rows": count,
        "ours_s": seconds("ours"),
        "naive_s": seconds("naive"),
        "trl_s": seconds("trl"),
        "ratio_vs_naive": ratio("naive", "ours"),
        "ratio_vs_trl": ratio("trl", "ours"),
        "rows_computed": round(ours.metrics["train/rows_computed_frac"] * count) if ours else None,
        "zero_adv_groups": systems[full_arm].metrics["train/zero_adv_groups_frac"],
        "autocast_bf16": ours.autocast if ours else None,
    }
    if args.kl and not args.lora_only:
        result["ratio_vs_naive_kl"] = ratio("naive, KL in reward", full_arm)
    result.update({
        "lora_rank": LORA["rank"],
        "lora_rows_computed": round(systems[lora_arm].metrics["train/rows_computed_frac"] * count),
        "lora_s": seconds(lora_arm),
        "full_s": seconds(full_arm),
        "lora_speedup": ratio(full_arm, lora_arm),
        "lora_peak_mib": round(peak[lora_arm]),
        "full_peak_mib": round(peak[full_arm]),
        "sync_bytes_lora": sync[lora_arm],
        "sync_bytes_full": sync[full_arm],
    })

    def vs_naive(key: str) -> str:
        r = ratio("naive, KL in reward" if "KL" in key else "naive", key)
        return f"{r:.2f}x" if r is not None else "-"

    def learner(key: str) -> list[str]:
        return [f"{peak[key]:.0f}", f"{sync[key] / 2**20:.1f}"] if key in peak else ["", ""]

    table = [[name, key, f"{med[key]:.3f}", vs_naive(key), *learner(key)] for key in systems]
    if note:
        table.append([name, "trl", "-", note, "", ""])
    lengths = rollouts.lengths
    print(f"[{name}] {count} rows, response tokens mean {lengths.mean():.1f} max {lengths.max()}, "
          f"zero-advantage groups {result['zero_adv_groups']:.0%}, rows computed by ours {result['rows_computed']} "
          f"(KL arms: {result['lora_rows_computed']}), bf16 autocast {'on' if systems[full_arm].autocast else 'off'}", flush=True)
    return result, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="default,smollm2", help="comma-separated: default, smollm2 (default: both)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every system (default 1, as trials run)")
    ap.add_argument("--repeats", type=int, default=5, help="timed updates per system (median reported), after one warm-up round")
    ap.add_argument("--kl", action="store_true", help="also time the naive loop with KL in the reward (ours always has KL arms: the LoRA comparison)")
    ap.add_argument("--no-trl", action="store_true", help="skip TRL even when it is installed")
    ap.add_argument("--lora-only", action="store_true", help="time only the LoRA comparison (full and LoRA arms, KL in the reward); the other columns are null")
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
    print(f"\n{'model':<8} {'system':<30} {'update s':>9} {'vs naive':>9} {'peak MiB':>9} {'sync MiB':>9}")
    for row in table:
        print(f"{row[0]:<8} {row[1]:<30} {row[2]:>9} {row[3]:>9} {row[4]:>9} {row[5]:>9}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
