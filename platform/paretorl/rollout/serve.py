"""The rollout Serve deployment: R replicas of an engine, versioned weights pulled on demand."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future

from paretorl.rollout.registry import StaleVersionError, fetch
from paretorl.rollout.types import Rollouts, SamplingParams

logger = logging.getLogger(__name__)


def make_engine(cfg, model_dir: str, lora: dict | None = None):
    """The rollout engine `cfg.engine` names (cfg: paretorl.config.RolloutConfig), on a policy (a
    local folder or an object-store URI, copied to this node first).

    `lora` (paretorl.config.LoraSettings as a dict, or None): the engine will be sent adapters of
    that rank for the policy in `model_dir`. A LoRA checkpoint as `model_dir` (a PEFT adapter
    folder) starts the engine on its base, with that adapter applied.
    """
    from paretorl import storage
    from paretorl.models.lora import Adapter, is_adapter_dir

    model_dir = storage.local_copy(model_dir)
    adapter = None
    if is_adapter_dir(model_dir):
        adapter = Adapter.load(model_dir)
        lora = {"rank": adapter.rank, "targets": list(adapter.config["target_modules"])}
        model_dir = storage.local_copy(adapter.base)
    engine = _engine(cfg, str(model_dir), lora)
    if adapter is not None:
        engine.load_weights(adapter)
    return engine


def _engine(cfg, model_dir: str, lora: dict | None):
    if cfg.engine == "embedded":
        from paretorl.rollout.engine import EmbeddedEngine

        return EmbeddedEngine.from_dir(model_dir, dtype=cfg.dtype, threads=cfg.threads, keep_base=lora is not None)
    if cfg.engine == "vllm":
        from transformers import AutoTokenizer

        from paretorl.rollout.vllm_engine import VLLMEngine

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        return VLLMEngine(
            model_dir, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype=cfg.dtype,
            threads=cfg.threads, vllm=cfg.vllm.model_dump(), lora=lora,
        )
    raise ValueError(f"unknown rollout engine {cfg.engine!r}")


class RolloutServer:
    """One replica. `generate` samples with exactly the policy version the request names.

    A replica starts on the base policy (version 0) whether it is one of the first, a restart or
    an autoscaled addition, and pulls whatever version its first request names.
    """

    def __init__(self, model_dir: str, registry_name: str, rollout: dict, lora: dict | None = None):
        from ray import serve

        from paretorl.config import RolloutConfig

        self._engine = make_engine(RolloutConfig.model_validate(rollout), model_dir, lora)
        self._registry_name = registry_name
        self._version = 0  # the base policy in model_dir
        self._lock = threading.Lock()
        self._replica = serve.get_replica_context().replica_id.unique_id  # a restarted replica gets a new one

    def _sync(self, version: int) -> float:
        started = time.perf_counter()
        self._engine.load_weights(fetch(self._registry_name, version))  # full weights, or a LoRA trial's adapter
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
            out.stats = {**out.stats, "sync_s": sync_s, "gen_s": time.perf_counter() - started, "replica": self._replica}
            return out

    def version(self) -> int:
        return self._version

    def __del__(self):
        """Serve calls this when it removes the replica (serve.delete, a scale-down), before ending
        its actor: an engine with processes of its own (vLLM's engine core) stops them here."""
        shutdown = getattr(getattr(self, "_engine", None), "shutdown", None)
        if shutdown is not None:
            shutdown()


def start_rollout_app(app_name: str, model_dir: str, registry_name: str, cfg, accelerator: str = "GPU", lora: dict | None = None):
    """Deploy the trial's rollout application (no HTTP route) and return its handle.

    Each replica takes `cfg.num_gpus` of `accelerator` (resources.accelerator: GPU or a custom resource).
    `lora`: the trial's LoRA settings (a dict) when it publishes adapters, else None.
    """
    from ray import serve

    options = dict(
        name="rollout",
        ray_actor_options=replica_resources(cfg, accelerator),
        max_ongoing_requests=1,  # one batch at a time per replica: the engine uses all its threads
    )
    if cfg.autoscaling:
        options["autoscaling_config"] = cfg.autoscaling
    else:
        options["num_replicas"] = cfg.replicas
    app = serve.deployment(RolloutServer, **options).bind(str(model_dir), registry_name, cfg.model_dump(), lora)
    try:
        return serve.run(app, name=app_name, route_prefix=None)
    except RuntimeError as e:  # Serve says only "Failed to update the deployments ['rollout']"
        status = serve.status().applications.get(app_name)
        raise RolloutAppError(f"rollout app {app_name} failed to deploy: {deploy_failure(status) or e}") from e


class RolloutAppError(RuntimeError):
    """The trial's rollout application failed to deploy (a replica's constructor raised)."""


def deploy_failure(app) -> str | None:
    """Why an app (its `serve.status()` entry, or None) failed to deploy: the last line of each
    failed deployment's traceback (the replica constructor's exception), or None if it has not."""
    if app is None or app.status != "DEPLOY_FAILED":
        return None
    reasons = [d.message.strip().splitlines()[-1] for d in app.deployments.values() if d.status == "DEPLOY_FAILED" and d.message.strip()]
    return "; ".join(reasons) or app.message


def connect_when_running(app_name: str, timeout_s: float = 1800.0, poll_s: float = 0.2, absent_s: float = 120.0):
    """The app's handle once Serve reports it RUNNING, after one cheap request has set up this
    process's route to it.

    A trial deploys its rollout app in a thread while Ray Train starts its learner (both take
    seconds of processes, imports and model loads), so the learner may get here first. Raises
    RolloutAppError naming the replica constructor's exception if the deployment failed, and
    TimeoutError if the app never appears (its deploy call itself failed) or is not running
    after `timeout_s` (a replica waiting for a node the autoscaler never adds).
    """
    from ray import serve

    started = time.monotonic()
    while True:
        app = serve.status().applications.get(app_name)
        waited = time.monotonic() - started
        if app is not None and app.status == "RUNNING":
            break
        if app is not None and app.status == "DEPLOY_FAILED":
            raise RolloutAppError(f"rollout app {app_name} failed to deploy: {deploy_failure(app)}")
        if app is None and waited > absent_s:
            raise TimeoutError(f"rollout app {app_name} was not deployed within {absent_s:.0f} s (see the trial's log for the deploy error)")
        if waited > timeout_s:
            raise TimeoutError(f"rollout app {app_name} not running after {timeout_s:.0f} s (status {app.status}: {app.message})")
        time.sleep(poll_s)
    handle = serve.get_app_handle(app_name)
    handle.version.remote().result()  # the first request of a process waits for its router to learn the replicas
    return handle


def in_background(fn, *args) -> Future:
    """`fn(*args)` in a daemon thread; its result or exception in the returned future.

    A daemon thread, not an executor's: a trial process that fails while its rollout app is
    still deploying (serve.run can wait minutes for a node) must not wait for it at exit.
    """
    future: Future = Future()

    def run():
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # handed to whoever asks for the result
            future.set_exception(e)

    threading.Thread(target=run, name=getattr(fn, "__name__", "background"), daemon=True).start()
    return future


def replica_resources(cfg, accelerator: str = "GPU") -> dict:
    """Ray actor options of one replica: its CPUs and its share of the accelerator resource.

    A vLLM replica with tensor parallelism takes `num_gpus` per rank: vLLM starts its ranks as
    processes of this actor (its "mp" backend, outside a placement group) and refuses a world size
    above the GPUs Ray made visible to it (vllm/config/parallel.py, ParallelConfig.__post_init__).
    """
    gpus = cfg.num_gpus * (cfg.vllm.tensor_parallel_size if cfg.engine == "vllm" else 1)
    if accelerator == "GPU" or not gpus:
        return {"num_cpus": cfg.num_cpus, "num_gpus": gpus}
    return {"num_cpus": cfg.num_cpus, "resources": {accelerator: gpus}}


class RolloutClient:
    """What the learner holds: splits a batch over replicas and checks every response's version.

    A chunk whose replica died while sampling it (killed, node lost) is sent again, up to
    `retries` times: Serve routes the retry to a live replica, which pulls the version first.
    """

    def __init__(self, handle, replicas: int, pad_id: int, retries: int = 2):
        self._handle = handle
        self._replicas = replicas
        self._pad_id = pad_id
        self._retries = retries

    def generate(self, prompts: list[list[int]], params: SamplingParams, version: int) -> Rollouts:
        chunks = _split(prompts, self._replicas)
        responses = [self._handle.generate.remote(chunk, params, version) for chunk in chunks]
        parts = [self._result(r, chunk, params, version) for r, chunk in zip(responses, chunks)]
        for part in parts:
            if part.version != version:
                raise StaleVersionError(f"rollout sampled with version {part.version}, expected {version}")
        return concat(parts, self._pad_id)

    def _result(self, response, chunk: list[list[int]], params: SamplingParams, version: int) -> Rollouts:
        from ray.exceptions import RayActorError

        for attempt in range(self._retries + 1):
            try:
                return response.result()
            except RayActorError as e:  # the replica died mid-request; nothing was sampled
                if attempt == self._retries:
                    raise
                logger.warning("rollout replica died (%s); sending its %d prompts again", type(e).__name__, len(chunk))
                response = self._handle.generate.remote(chunk, params, version)


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
