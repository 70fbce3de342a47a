"""What a trial starts from, per distinct setting of the swept model.*, sft.* and task.* keys.

A space may sweep keys that shape the base policy (model.*, sft.*) or the data (task.*). Each
distinct (model, sft, task) setting the space can sample (search/settings.py) gets its own base
policy (the SFT cache, `models/sft.py`, is keyed by content, so equal settings share one), and
each distinct task setting its own train/eval/test splits. All are prepared before Ray starts; a
trial looks up its own by the setting of its config (`trial_paths`), so its verifier, its data and
its base policy always come from the same task settings. Continuous ranges over these keys are
refused when the space loads (`space.unpreparable`): they cannot be prepared ahead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from paretorl import storage
from paretorl.config import TrialConfig
from paretorl.search.settings import base_settings, setting_key, swept_base_keys, task_key
from paretorl.search.space import SearchSpace


@dataclass
class PreparedBases:
    reference: dict  # {"base_model", "train", "eval"} of the reference setting
    settings: dict = field(default_factory=dict)  # setting_key -> {"base_model", "train", "eval"}: what trials may read
    test_splits: dict = field(default_factory=dict)  # task_key -> test split path: the report only, never a trial


def prepare_bases(space: SearchSpace, task_spec: str, data_dir: str | Path, cache_dir: str | Path, log=print) -> PreparedBases:
    """Splits and a base policy for every setting of `base_settings`; raises on bad input.

    The reference setting's splits go to `data_dir`, any other task setting's to
    `data_dir/<task key>/`. Both may be folders or object-store URIs (paretorl.storage).
    """
    configs = base_settings(space, task_spec)
    if len(configs) > 1:
        log(f"the space sweeps {', '.join(swept_base_keys(space))}: preparing {len(configs)} base settings")
    prepared = PreparedBases(reference={})
    split_dirs: dict[str, dict] = {}
    for i, cfg in enumerate(configs):
        tkey = task_key(cfg)
        if tkey not in split_dirs:
            split_dirs[tkey] = _write_splits(cfg, task_spec, data_dir if i == 0 else storage.join(data_dir, tkey))
        splits = split_dirs[tkey]
        paths = {"base_model": str(_base_policy(cfg, task_spec, splits, cache_dir, log)), "train": splits["train"], "eval": splits["eval"]}
        prepared.settings[setting_key(cfg)] = paths
        prepared.test_splits[tkey] = splits["test"]
        if i == 0:
            prepared.reference = dict(paths)
    return prepared


def trial_paths(cfg: TrialConfig, shared: dict) -> dict:
    """The base policy and train/eval splits of a trial's own setting."""
    try:
        return shared["settings"][setting_key(cfg)]
    except KeyError:
        raise KeyError(f"no base policy was prepared for this trial's model/sft/task settings ({setting_key(cfg)}); "
                       "were they changed after the sweep was prepared?") from None


def _write_splits(cfg: TrialConfig, task_spec: str, out_dir: str | Path) -> dict:
    from paretorl.tasks import load_task, read_rows, validate_rows

    task = load_task(task_spec, **cfg.task.kwargs)
    splits = _written_splits(task, cfg, out_dir)
    for split in ("train", "eval", "test"):
        validate_rows(read_rows(splits[split]), splits[split])
    n_train = len(read_rows(splits["train"]))
    if n_train < cfg.train.prompts_per_step:
        raise ValueError(f"{splits['train']}: {n_train} rows, fewer than train.prompts_per_step = {cfg.train.prompts_per_step}")
    return {split: storage.resolve(path) for split, path in splits.items()}


def _written_splits(task, cfg: TrialConfig, out_dir: str | Path) -> dict:
    """write_splits into `out_dir`; for an object-store URI, into a temporary folder, then uploaded."""
    import tempfile

    from paretorl.tasks import write_splits

    args = (cfg.task.n_train, cfg.task.n_eval, cfg.task.seed)
    if not storage.is_uri(out_dir):
        return write_splits(task, out_dir, *args, n_test=cfg.task.n_test)
    with tempfile.TemporaryDirectory(prefix="paretorl-data-") as tmp:
        local = write_splits(task, tmp, *args, n_test=cfg.task.n_test)
        storage.upload(tmp, out_dir, last="meta.json")
    return {split: storage.join(out_dir, Path(path).name) for split, path in local.items()}


def _base_policy(cfg: TrialConfig, task_spec: str, splits: dict, cache_dir: str | Path, log) -> str | Path:
    """The tiny model warm-started by SFT, or the pretrained model (converted once), SFT only if asked."""
    from paretorl.models.sft import warm_start
    from paretorl.tasks import load_task, read_rows

    task = load_task(task_spec, **cfg.task.kwargs)
    train_rows = read_rows(splits["train"])
    init = None
    if cfg.model.pretrained:
        from paretorl.models.pretrained import check_context, convert_pretrained

        init = convert_pretrained(cfg.model.pretrained, cache_dir, log=log)
        prompts = [r["prompt"] for split in ("train", "eval", "test") for r in (train_rows if split == "train" else read_rows(splits[split]))]
        check_context(init, prompts, max(cfg.train.max_new_tokens, cfg.eval.max_new_tokens))
        if not cfg.sft.on_pretrained:
            return init
    _check_demonstrations(task, train_rows, task_spec)
    return warm_start(task, cfg.task, cfg.model, cfg.sft, train_rows, cache_dir, log=log, init_dir=init)


def _check_demonstrations(task, rows: list[dict], spec: str, n: int = 20) -> None:
    """A task whose own demonstrations fail its verifier would train on noise: refuse it."""
    rng = random.Random(0)
    bad = [i for i, row in enumerate(rows[:n]) if not task.score(row, task.demonstrate(row, rng))]
    if bad:
        raise ValueError(f"task {spec}: demonstrate() produced solutions that score() rejects for rows {bad[:5]} of the training split")
