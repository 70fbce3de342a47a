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


def test_connect_waits_for_an_app_deployed_in_the_background(ray_local, tiny_prepared):
    """A trial deploys its rollout app in a thread while Ray Train starts the learner; the learner's
    connect_when_running returns a handle that answers once the app is up."""
    from ray import serve

    from paretorl.rollout.serve import connect_when_running, in_background

    registry = create_registry("test-bg-weights")
    try:
        deploying = in_background(
            start_rollout_app, "test-bg-rollout", tiny_prepared.shared["base_model"], "test-bg-weights",
            RolloutConfig(replicas=1, dtype="float32", num_cpus=0.1),
        )
        handle = connect_when_running("test-bg-rollout")
        assert handle.version.remote().result() == 0
        deploying.result(timeout=60)  # serve.run returned too
        assert serve.status().applications["test-bg-rollout"].status == "RUNNING"
    finally:
        serve.delete("test-bg-rollout")
        ray_local.kill(registry)


def test_connect_names_a_failed_deployment(ray_local, tmp_path):
    """A replica that cannot start (here: no model at the path) fails the learner with the
    replica's exception, not a hang or Serve's bare "Failed to update the deployments"."""
    from ray import serve

    from paretorl.rollout.serve import RolloutAppError, connect_when_running, in_background

    missing = tmp_path / "no-model-here"
    registry = create_registry("test-fail-weights")
    try:
        deploying = in_background(start_rollout_app, "test-fail-rollout", str(missing), "test-fail-weights", RolloutConfig(replicas=1, num_cpus=0.1))
        with pytest.raises(RolloutAppError, match="test-fail-rollout failed to deploy: FileNotFoundError: .*no-model-here is not a model directory"):
            connect_when_running("test-fail-rollout")
        with pytest.raises(RolloutAppError, match="no-model-here is not a model directory"):
            deploying.result(timeout=120)  # serve.run in the deploying thread fails with the same reason
    finally:
        serve.delete("test-fail-rollout")
        ray_local.kill(registry)
