"""Versioned policy weights, pulled by rollout replicas (docs/architecture.md, step 5).

The learner publishes version v (an object-store ref to the state dict) after each update;
each rollout request names the version it needs; a replica that is behind pulls that version
before sampling. Version 0 is the base policy every replica loads at start, so a restarted or
newly added replica catches up on its first request instead of serving base weights.
"""

from __future__ import annotations

import ray

NAMESPACE = "paretorl"


class StaleVersionError(RuntimeError):
    """A rollout was (or would be) sampled with a policy version other than the one asked for."""


@ray.remote(num_cpus=0, max_restarts=0)
class WeightRegistry:
    def __init__(self):
        self._version = 0
        self._weights: list | None = None  # [ObjectRef] wrapped so Ray does not resolve it here
        self._failure: str | None = None

    def publish(self, version: int, wrapped_ref: list) -> None:
        if version <= self._version:
            raise StaleVersionError(f"cannot publish version {version}: version {self._version} is already published")
        self._version, self._weights = version, wrapped_ref

    def current(self) -> int:
        return self._version

    def fail(self, message: str) -> None:
        """The learner stopped the trial for a reason a retry cannot fix (e.g. a NaN loss)."""
        self._failure = message

    def failure(self) -> str | None:
        return self._failure

    def get(self, version: int) -> list:
        """The wrapped ref of `version`; only the latest version is kept."""
        if version != self._version or self._weights is None:
            raise StaleVersionError(f"version {version} requested, but the registry holds version {self._version}")
        return self._weights


def create_registry(name: str):
    return WeightRegistry.options(name=name, namespace=NAMESPACE, get_if_exists=True).remote()


def publish(registry, version: int, state_dict: dict) -> None:
    """Put `state_dict` (CPU tensors) in the object store and register it as `version`."""
    ref = ray.put(state_dict)
    ray.get(registry.publish.remote(version, [ref]))


def fetch(registry_name: str, version: int) -> dict:
    registry = ray.get_actor(registry_name, namespace=NAMESPACE)
    (ref,) = ray.get(registry.get.remote(version))
    return ray.get(ref)
