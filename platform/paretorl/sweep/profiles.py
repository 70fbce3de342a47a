"""Profiles (profiles/*.yaml): named bundles of settings for a kind of machine.

A profile is a partial search-space file: `trial:` (any TrialConfig fields) and `budget:`.
`--profile gpu` lays it over the search space, under the command line's own flags:
space file < profile < --smoke-test < --trials/--max-concurrent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paretorl.config import TrialConfig

PROFILES_DIR = Path(__file__).resolve().parents[3] / "profiles"


class ProfileError(ValueError):
    """A profile is missing or malformed; the message names the file and the key."""


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    trial: dict[str, Any] = Field(default_factory=dict)
    budget: dict[str, Any] = Field(default_factory=dict)


def available() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def profile_path(name_or_path: str) -> Path:
    """A profile name (profiles/<name>.yaml) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ProfileError(f"profile file not found: {path}")
        return path
    path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ProfileError(f"unknown profile {name_or_path!r}; available: {', '.join(available()) or '(none)'}")
    return path


def load_profile(name_or_path: str) -> dict[str, Any]:
    """The profile as search-space overrides ({"trial": ..., "budget": ...}), validated."""
    path = profile_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: YAML syntax error: {e}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        profile = Profile.model_validate(raw)
        TrialConfig.model_validate(profile.trial)
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}" for err in e.errors())
        raise ProfileError(f"{path}: {where}") from None
    return {k: v for k, v in (("trial", profile.trial), ("budget", profile.budget)) if v}
