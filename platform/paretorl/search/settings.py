"""The distinct settings of the swept model.*, sft.* and task.* keys a space can sample, the keys
that name them, and the space's reference setting.

Each distinct (model, sft, task) setting gets its own base policy and each distinct task setting
its own splits, prepared before Ray starts (sweep/bases.py); a trial and the report look theirs
up by these keys.

The *reference* setting gives the sweep's base point (measured on its eval and test splits) and
the cutoff baseline: the space's fixed `trial:` settings, with the swept base keys at the first
initial point's values (else at their first choice), so it is always a setting trials use.
"""

from __future__ import annotations

import hashlib
import itertools
import json

from paretorl.config import TrialConfig
from paretorl.search.space import SearchSpace, shapes_base


def swept_base_keys(space: SearchSpace) -> list[str]:
    """Swept keys that shape the base policy or the data; model.lora.* shape only the trial."""
    return sorted(k for k in space.params if shapes_base(k))


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()[:12]


def task_key(cfg: TrialConfig) -> str:
    """Names a distinct task setting (its splits)."""
    return _digest(cfg.task.model_dump())


def setting_key(cfg: TrialConfig) -> str:
    """Names a distinct (model, sft, task) setting (its base policy and splits)."""
    return _digest([cfg.task.model_dump(), cfg.model.base_dump(), cfg.sft.model_dump()])


def reference_config(space: SearchSpace, task_spec: str) -> TrialConfig:
    """The reference setting's trial config (see the module doc)."""
    keys = swept_base_keys(space)
    first = space.initial_points[0] if space.initial_points else {k: space.params[k].choices[0] for k in keys}
    return space.trial_config({k: first[k] for k in keys}, {"task": {"name": task_spec}})


def base_settings(space: SearchSpace, task_spec: str) -> list[TrialConfig]:
    """The reference setting first, then every other distinct setting the space can sample:
    each combination of the swept base keys' choices, and those of the initial points."""
    extra = {"task": {"name": task_spec}}
    keys = swept_base_keys(space)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(space.params[k].choices for k in keys))] if keys else []
    combos += [{k: point[k] for k in keys} for point in space.initial_points]
    settings: dict[str, TrialConfig] = {}
    for cfg in [reference_config(space, task_spec), *(space.trial_config(c, extra) for c in combos)]:
        settings.setdefault(setting_key(cfg), cfg)
    return list(settings.values())
