"""Profiles (profiles/*.yaml): named bundles of settings for a kind of machine.

A profile is a partial search-space file: `trial:` (any TrialConfig fields) and `budget:`.
`--profile gpu` lays it over the search space, under the command line's own flags:
space file < profile < --smoke-test < --trials/--max-concurrent.

`tracking:` names the MLflow tracking server (`uri`) and where the experiment keeps its
artifacts (`artifact_location`, used when the experiment is created). Values may read the
environment, `${VAR}` or `${VAR:-default}`, so a profile names no one's server; --mlflow-uri
still wins over `uri`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paretorl.config import TrialConfig

PROFILES_DIR = Path(__file__).resolve().parents[3] / "profiles"


class ProfileError(ValueError):
    """A profile is missing or malformed; the message names the file and the key."""


class Tracking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str | None = Field(None, description="MLflow tracking URI, e.g. http://mlflow.internal:5000")
    artifact_location: str | None = Field(None, description="artifact root of a newly created experiment, e.g. s3://bucket/paretorl")


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field("", description="one line saying what machine the profile is for")
    trial: dict[str, Any] = Field(default_factory=dict, description="trial-config fields set for every trial (as a space file's trial:)")
    budget: dict[str, Any] = Field(default_factory=dict, description="budget fields (as a space file's budget:)")
    tracking: Tracking = Field(default_factory=Tracking, description="the MLflow tracking server and artifact store")


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
    profile = read_profile(name_or_path)
    return {k: v for k, v in (("trial", profile.trial), ("budget", profile.budget)) if v}


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def tracking_settings(name_or_path: str, cli_uri: str | None = None, env=os.environ) -> dict[str, str | None]:
    """{"uri", "artifact_location"} of the profile, environment references filled in.

    An unset variable without a default is an error naming the file, key and variable, unless
    the command line gives the value (--mlflow-uri for `uri`). An empty result means "not set".
    """
    path = profile_path(name_or_path)
    tracking = read_profile(name_or_path).tracking
    out: dict[str, str | None] = {}
    for key in ("uri", "artifact_location"):
        raw = getattr(tracking, key)
        if raw is None or (key == "uri" and cli_uri):
            out[key] = cli_uri if key == "uri" else None
            continue

        def fill(m: re.Match) -> str:
            var, default = m.group(1), m.group(2)
            if var in env:
                return env[var]
            if default is not None:
                return default
            hint = " or pass --mlflow-uri" if key == "uri" else ""
            raise ProfileError(f"{path}: tracking.{key}: environment variable {var} is not set; set it{hint}")

        out[key] = _VAR.sub(fill, raw).strip() or None
    return out


def read_profile(name_or_path: str) -> Profile:
    """Parse and validate a profile file; raises ProfileError naming the file and key."""
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
    return profile
