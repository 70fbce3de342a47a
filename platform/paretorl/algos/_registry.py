"""A named-function registry: how a sweep picks an objective, an aggregation, a KL estimator.

The search space names a choice (``objective: maxrl``); the registry maps the name to the
pure function (or small record of functions) that implements it, refuses a second entry under
the same name, and lists the valid names when asked for an unknown one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

F = TypeVar("F")


class Registry(Generic[F]):
    """Maps names to implementations for one kind of choice (e.g. ``"objective"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._fns: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator registering ``fn`` (or a record) under ``name``; a duplicate is a ValueError."""

        def add(fn: F) -> F:
            if name in self._fns:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._fns[name] = fn
            return fn

        return add

    def get(self, name: str) -> F:
        """The entry registered as ``name``; ValueError listing the valid names if none."""
        try:
            return self._fns[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(self._fns)}"
            ) from None

    @property
    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._fns)
