"""The rollout Serve deployment with versioned, pull-based weight sync (real Ray Serve)."""

from __future__ import annotations

import pytest
import torch

from paretorl.config import RolloutConfig
from paretorl.models.build import load_policy
from paretorl.rollout.registry import StaleVersionError, create_registry, publish
from paretorl.rollout.serve import RolloutClient, start_rollout_app
from paretorl.rollout.types import SamplingParams

PARAMS = SamplingParams(n=2, max_new_tokens=6, temperature=1.0, seed=7)


@pytest.fixture(scope="module")
def deployment(ray_local, tiny_prepared):
    from ray import serve

    base_dir = tiny_prepared.shared["base_model"]
    registry = create_registry("test-weights")
    handle = start_rollout_app("test-rollout", base_dir, "test-weights", RolloutConfig(replicas=2, dtype="float32", num_cpus=0.1))
    model, tokenizer = load_policy(base_dir)
    yield RolloutClient(handle, replicas=2, pad_id=tokenizer.pad_token_id), registry, model, handle
    serve.delete("test-rollout")
    ray_local.kill(registry)


PROMPTS = [[1, 40, 41, 3], [1, 42, 3], [1, 43, 44, 45, 3], [1, 46, 3]]


def test_versions_are_pulled_and_checked(deployment):
    client, registry, model, handle = deployment
    before = client.generate(PROMPTS, PARAMS, version=0)
    assert before.version == 0 and before.tokens.shape[0] == len(PROMPTS) * PARAMS.n

    # version 1: the same policy with its output layer scaled, so sampling must change
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["model.embed_tokens.weight"] = state["model.embed_tokens.weight"] * 3.0
    publish(registry, 1, state)
    after = client.generate(PROMPTS, PARAMS, version=1)
    assert after.version == 1
    # whichever replica takes a request, it answers with version 1 (pulled on demand)
    responses = [handle.generate.remote([p], PARAMS, 1) for p in PROMPTS * 2]
    assert {r.result().version for r in responses} == {1}
    assert not torch.equal(torch.as_tensor(before.logprobs), torch.as_tensor(after.logprobs))

    # asking for a version the registry no longer holds is an error, not a silent rollout
    with pytest.raises(Exception, match="version 0 requested"):
        client.generate(PROMPTS, PARAMS, version=0)


def test_publishing_an_old_version_is_refused(deployment):
    _, registry, model, _ = deployment
    with pytest.raises(Exception, match="already published"):
        publish(registry, 1, {k: v.clone() for k, v in model.state_dict().items()})
    assert issubclass(StaleVersionError, RuntimeError)
