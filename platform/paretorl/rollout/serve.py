"""The rollout Serve deployment: R replicas of an engine, versioned weights pulled on demand."""

from __future__ import annotations

import threading
import time

from paretorl.rollout.registry import StaleVersionError, fetch
from paretorl.rollout.types import Rollouts, SamplingParams


def make_engine(engine: str, model_dir: str, *, dtype: str, threads: int):
    if engine == "embedded":
        from paretorl.models.build import load_policy
        from paretorl.rollout.engine import EmbeddedEngine

        model, tokenizer = load_policy(model_dir)
        return EmbeddedEngine(
            model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype=dtype, threads=threads
        )
    raise ValueError(f"unknown rollout engine {engine!r}")


class RolloutServer:
    """One replica. `generate` samples with exactly the policy version the request names."""

    def __init__(self, model_dir: str, registry_name: str, engine: str, dtype: str, threads: int):
        self._engine = make_engine(engine, model_dir, dtype=dtype, threads=threads)
        self._registry_name = registry_name
        self._version = 0  # the base policy in model_dir
        self._lock = threading.Lock()

    def _sync(self, version: int) -> float:
        started = time.perf_counter()
        self._engine.load_state_dict(fetch(self._registry_name, version))
        self._version = version
        return time.perf_counter() - started

    def generate(self, prompts: list[list[int]], params: SamplingParams, version: int) -> Rollouts:
        with self._lock:
            sync_s = self._sync(version) if version != self._version else 0.0
            started = time.perf_counter()
            out = self._engine.generate(prompts, params)
            if self._version != version:
                raise StaleVersionError(f"replica holds version {self._version}, request needs {version}")
            out.version = self._version
            out.stats = {**out.stats, "sync_s": sync_s, "gen_s": time.perf_counter() - started}
            return out

    def version(self) -> int:
        return self._version


def start_rollout_app(app_name: str, model_dir: str, registry_name: str, cfg):
    """Deploy the trial's rollout application (no HTTP route) and return its handle."""
    from ray import serve

    options = dict(
        name="rollout",
        ray_actor_options={"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        max_ongoing_requests=1,  # one batch at a time per replica: the engine uses all its threads
    )
    if cfg.autoscaling:
        options["autoscaling_config"] = cfg.autoscaling
    else:
        options["num_replicas"] = cfg.replicas
    app = serve.deployment(RolloutServer, **options).bind(str(model_dir), registry_name, cfg.engine, cfg.dtype, cfg.threads)
    return serve.run(app, name=app_name, route_prefix=None)


class RolloutClient:
    """What the learner holds: splits a batch over replicas and checks every response's version."""

    def __init__(self, handle, replicas: int, pad_id: int):
        self._handle = handle
        self._replicas = replicas
        self._pad_id = pad_id

    def generate(self, prompts: list[list[int]], params: SamplingParams, version: int) -> Rollouts:
        chunks = _split(prompts, self._replicas)
        responses = [self._handle.generate.remote(chunk, params, version) for chunk in chunks]
        parts = [r.result() for r in responses]
        for part in parts:
            if part.version != version:
                raise StaleVersionError(f"rollout sampled with version {part.version}, expected {version}")
        return concat(parts, self._pad_id)


def _split(items: list, parts: int) -> list[list]:
    size = -(-len(items) // max(1, min(parts, len(items))))
    return [items[i : i + size] for i in range(0, len(items), size)]


def concat(parts: list[Rollouts], pad_id: int) -> Rollouts:
    import numpy as np

    if len(parts) == 1:
        return parts[0]
    width = max(p.tokens.shape[1] for p in parts)
    pad = lambda a, v: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=v)  # noqa: E731
    return Rollouts(
        tokens=np.concatenate([pad(p.tokens, pad_id) for p in parts]),
        logprobs=np.concatenate([pad(p.logprobs, 0.0) for p in parts]),
        lengths=np.concatenate([p.lengths for p in parts]),
        finish_reasons=[r for p in parts for r in p.finish_reasons],
        n=parts[0].n,
        version=parts[0].version,
        stats={k: max(p.stats.get(k, 0.0) for p in parts) for k in parts[0].stats},
    )
