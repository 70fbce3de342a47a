"""SFT warm start: the base policy every trial of a sweep starts from.

The tokenizer is trained on the task's prompts and demonstrations, the model on
demonstrations (loss on response tokens only). The result is cached by content (task,
model and SFT config, the task's source), so it is built once and reused across trials
and runs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import time
from pathlib import Path

from paretorl.models.build import build_model, load_policy, save_base_policy
from paretorl.models.tokenizer import build_tokenizer, encode_completion, encode_prompt

CACHE_VERSION = 1


def cache_key(task, task_cfg, model_cfg, sft_cfg, init: str | None = None) -> str:
    try:
        source = inspect.getsource(type(task))
    except (OSError, TypeError):
        source = type(task).__qualname__
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "task": task_cfg.model_dump(),
            "source": hashlib.sha256(source.encode()).hexdigest(),
            "model": model_cfg.base_dump(),  # LoRA settings shape trials, not the base
            "sft": sft_cfg.model_dump(),
            **({"init": init} if init else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def demonstrations(task, rows: list[dict], n: int, seed: int) -> list[tuple[str, str]]:
    """n (prompt, demonstration) pairs, cycling over rows with fresh randomness each time."""
    rng = random.Random(seed)
    return [(rows[i % len(rows)]["prompt"], task.demonstrate(rows[i % len(rows)], rng)) for i in range(n)]


def _batches(examples: list[list[int]], prompt_lens: list[int], batch_size: int, steps: int, pad_id: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(examples), (batch_size,), generator=gen).tolist()
        width = max(len(examples[i]) for i in idx)
        ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        attn = torch.zeros((batch_size, width), dtype=torch.long)  # by length: a chat model's pad id is also its EOS
        for row, i in enumerate(idx):
            seq = torch.tensor(examples[i])
            ids[row, : len(seq)] = seq
            labels[row, prompt_lens[i] : len(seq)] = seq[prompt_lens[i] :]
            attn[row, : len(seq)] = 1
        yield ids, labels, attn


def train_sft(model, tokenizer, pairs: list[tuple[str, str]], cfg, max_len: int, progress=None) -> list[float]:
    """Supervised steps on (prompt, demonstration) pairs; returns the loss per step."""
    import torch

    examples, prompt_lens = [], []
    for prompt, demo in pairs:
        p = encode_prompt(tokenizer, prompt)
        seq = p + encode_completion(tokenizer, demo)
        if len(seq) > max_len:
            raise ValueError(f"demonstration too long for model.max_len={max_len}: {len(seq)} tokens for prompt {prompt!r}")
        examples.append(seq)
        prompt_lens.append(len(p))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(cfg.steps, 1), pct_start=0.1)
    model.train()
    losses = []
    for ids, labels, attn in _batches(examples, prompt_lens, cfg.batch_size, cfg.steps, tokenizer.pad_token_id, cfg.seed):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None:
            progress(len(losses), cfg.steps, losses[-1])
    model.eval()
    return losses


def warm_start(task, task_cfg, model_cfg, sft_cfg, train_rows: list[dict], cache_root: str | Path, log=print,
               init_dir: str | Path | None = None) -> Path | str:
    """The cached base policy directory for this task + model + SFT config (built if missing).

    cache_root: a local folder (a Path is returned) or an object-store URI (the entry's URI is
    returned; it is built locally and uploaded, see `paretorl.storage.cached_dir`).
    init_dir: start from this HF directory (a converted pretrained model, its own tokenizer)
    instead of a fresh tiny model with a tokenizer trained on the task's text.
    """
    from paretorl import storage

    init = Path(str(init_dir)).name if init_dir else None  # pretrained-<fingerprint>: names the content

    def build(out: Path) -> str:
        started = time.time()
        pairs = demonstrations(task, train_rows, sft_cfg.n_demos, sft_cfg.seed)
        if init_dir:
            model, tokenizer = load_policy(init_dir)
            max_len = model.config.max_position_embeddings
        else:
            texts = [text for pair in pairs for text in pair]
            tokenizer = build_tokenizer(texts, model_cfg.vocab_size)
            model = build_model(model_cfg, tokenizer, seed=sft_cfg.seed)
            max_len = model_cfg.max_len
        n_params = sum(p.numel() for p in model.parameters())
        log(f"base policy: SFT of a {n_params / 1e6:.2f}M-parameter Llama for {sft_cfg.steps} steps on {len(pairs)} demonstrations")
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("SFT"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"), TimeRemainingColumn()) as bar:
            job = bar.add_task("sft", total=sft_cfg.steps, loss=float("nan"))
            losses = train_sft(model, tokenizer, pairs, sft_cfg, max_len, lambda i, n, loss: bar.update(job, completed=i, loss=loss))
        meta = {"params": n_params, "final_loss": losses[-1] if losses else None, "seconds": round(time.time() - started, 1)}
        save_base_policy(model, tokenizer, out, meta)
        loss = "no SFT steps" if meta["final_loss"] is None else f"final loss {meta['final_loss']:.3f}"  # sft.steps 0: the untrained model
        return f"base policy: trained in {meta['seconds']} s, {loss}"

    name = f"base-{cache_key(task, task_cfg, model_cfg, sft_cfg, init)}"
    return storage.cached_dir(cache_root, name, build, marker="paretorl_base.json", label="base policy:", log=log)
