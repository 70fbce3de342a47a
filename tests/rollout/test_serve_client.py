"""RolloutClient's handling of a replica that dies mid-request (a fake handle: logic only)."""

from __future__ import annotations

import numpy as np
import pytest
from ray.exceptions import ActorDiedError

from paretorl.rollout.registry import StaleVersionError
from paretorl.rollout.serve import RolloutClient
from paretorl.rollout.types import FINISH_LENGTH, Rollouts, SamplingParams

PARAMS = SamplingParams(n=1, max_new_tokens=2)


class Response:
    def __init__(self, outcome):
        self._outcome = outcome

    def result(self):
        if isinstance(self._outcome, Exception):
            raise self._outcome
        return self._outcome


class FakeHandle:
    """`handle.generate.remote(...)`: the next scripted outcome per call, calls recorded."""

    def __init__(self, outcomes):
        self._outcomes = list(outcomes)
        self.calls = []
        self.generate = self

    def remote(self, prompts, params, version):
        self.calls.append((prompts, version))
        outcome = self._outcomes.pop(0)
        return Response(outcome(prompts, version) if callable(outcome) else outcome)


def answer(prompts, version, served_version=None):
    b = len(prompts)
    return Rollouts(
        tokens=np.ones((b, 2), dtype=np.int64), logprobs=np.zeros((b, 2), dtype=np.float32), lengths=np.full(b, 2),
        finish_reasons=[FINISH_LENGTH] * b, n=1, version=version if served_version is None else served_version,
    )


def test_a_chunk_whose_replica_died_is_sent_again():
    handle = FakeHandle([ActorDiedError(), answer, answer])
    out = RolloutClient(handle, replicas=2, pad_id=0).generate([[1], [2], [3], [4]], PARAMS, version=5)
    assert out.version == 5 and len(out.lengths) == 4
    # chunk 1 failed, chunk 2 answered, chunk 1 was sent again with the same version
    assert handle.calls == [([[1], [2]], 5), ([[3], [4]], 5), ([[1], [2]], 5)]


def test_retries_are_bounded():
    handle = FakeHandle([ActorDiedError()] * 3)
    with pytest.raises(ActorDiedError):
        RolloutClient(handle, replicas=1, pad_id=0, retries=2).generate([[1]], PARAMS, version=1)
    assert len(handle.calls) == 3


def test_a_response_of_another_version_raises():
    handle = FakeHandle([lambda p, v: answer(p, v, served_version=v - 1)])
    with pytest.raises(StaleVersionError, match="sampled with version 2, expected 3"):
        RolloutClient(handle, replicas=1, pad_id=0).generate([[1]], PARAMS, version=3)
