"""The sweep's reported front: the eval front's checkpoints and the base policy re-evaluated on
the test split, with 95% intervals, beside the cutoff baseline.

Everything that selects (Optuna, schedulers, the eval front) sees the eval split only. When the
sweep ends (and again on --resume; samples are cached per checkpoint) every checkpoint on the
eval front and the base policy sample `eval.test_samples` responses per test prompt, at the
eval split's temperature and token limit, all with the same seed (common random numbers). The
reported front is the non-dominated set of their test values; the cutoff curve is cut from the
base's test samples (evaluate/cutoff.py).
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

from rich.table import Table

from paretorl import storage
from paretorl.evaluate.cutoff import (
    CUTOFF_COLUMNS,
    beats_cutoff,
    cutoff_front,
    cutoff_pass_at,
)
from paretorl.evaluate.intervals import TEST_COLUMNS, interval_summary
from paretorl.evaluate.on_test import evaluate_on_test
from paretorl.report.figure_html import write_figure_html
from paretorl.report.front_files import write_points_csv
from paretorl.search.pareto import pareto_front
from paretorl.search.settings import reference_config, task_key

TEST_SEED_OFFSET = 7_919  # test sampling seed = the reference train.seed + this, for every checkpoint


def report_on_test(prep, points: list[dict], eval_front: list[dict], client, parent_id: str, log=print, evaluate=evaluate_on_test) -> dict:
    """Evaluate the candidates on test, write the reported front and the cutoff curve to the parent
    run (pareto_front.{csv,html,png}, cutoff_front.csv); returns {"front", "cutoff", "base"}.

    Every point gets a column `k` (the objective's k); the test-evaluated ones the TEST_COLUMNS.
    """
    space = prep.space
    k = space.objectives.pass_k
    ref = reference_config(space, prep.task_spec)  # eval settings and seed (eval.* is never swept), the base's setting
    base = _base_point(points)
    for p in points:
        p["k"] = k
    samples = {}
    for p in _candidates(base, eval_front):
        got = _sample(prep, ref, p, p is base, evaluate, log)
        if got is not None:
            samples[id(p)] = got
            p.update(interval_summary(got.correct, got.lengths, k))
    tested = [p for p in points if id(p) in samples]
    front = pareto_front(tested, "test_pass_at_k", "test_mean_tokens")
    base_samples = samples[id(base)]
    cutoff = cutoff_front(base_samples.correct, base_samples.lengths, k)
    with tempfile.TemporaryDirectory() as tmp:
        write_final_front(points, front, base, cutoff, space.metrics, Path(tmp))
        client.log_artifacts(parent_id, tmp)
    log(f"test split: {len(tested)} policies re-evaluated ({len(tested) - 1} eval-front checkpoints and the base), "
        f"{len(front)} on the test front; {len(cutoff)} cutoff budgets")
    return {"front": front, "cutoff": cutoff, "base": base}


def _base_point(points: list[dict]) -> dict:
    base = next((p for p in points if p.get("trial") == "base"), None)
    if base is None:  # a state written before the base point existed
        base = {"trial": "base", "step": 0}
        points.insert(0, base)
    return base


def _candidates(base: dict, eval_front: list[dict]) -> list[dict]:
    return [base, *(p for p in eval_front if p is not base and p.get("trial") != "base")]


POLICY_FILES = ("config.json", "adapter_config.json")  # a full model's folder, or a LoRA checkpoint's


def _sample(prep, ref, point: dict, is_base: bool, evaluate, log):
    """The point's test samples, or None (logged) when its checkpoint is gone."""
    from paretorl.tasks import load_task, read_rows

    # the base: the reference setting; a checkpoint: its trial's setting (and so its own test split)
    cfg = ref if is_base else prep.space.trial_config({k: point[k] for k in prep.space.params if k in point}, {"task": {"name": prep.task_spec}})
    model_dir = prep.shared["base_model"] if is_base else point.get("checkpoint")  # a folder or an s3:// URI
    if not model_dir or not any(storage.exists(storage.join(model_dir, f)) for f in POLICY_FILES):
        log(f"[yellow]warning:[/yellow] trial {point['trial']} step {point['step']}: no checkpoint at {model_dir}; left out of the test front")
        return None
    rows = read_rows(prep.test_splits[task_key(cfg)])
    task = load_task(prep.task_spec, **cfg.task.kwargs)
    return evaluate(model_dir, rows, ref.eval, task, ref.eval.test_samples, seed=ref.train.seed + TEST_SEED_OFFSET, dtype=cfg.rollout.dtype)


def write_final_front(points: list[dict], front: list[dict], base: dict, cutoff: list[dict], metrics: tuple[str, str], out_dir: Path) -> dict[str, Path]:
    """pareto_front.csv (every checkpoint; on_front = on the test front), .html, .png, and cutoff_front.csv."""
    from paretorl.report.front_plots import front_figure, front_png

    maximize, minimize = metrics
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("pareto_front.csv", "pareto_front.html", "pareto_front.png", "cutoff_front.csv")}
    write_points_csv(points, front, ("trial", "step", "k", *TEST_COLUMNS, maximize, minimize), "test_mean_tokens", paths["pareto_front.csv"])
    with open(paths["cutoff_front.csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CUTOFF_COLUMNS))
        writer.writeheader()
        writer.writerows(cutoff)
    write_figure_html(front_figure(points, front, base, cutoff, maximize, minimize), paths["pareto_front.html"])
    front_png(points, front, base, cutoff, maximize, minimize, paths["pareto_front.png"])
    return paths


def front_table(front: list[dict], maximize: str, minimize: str, params: list[str], cutoff: list[dict] | None = None, base: dict | None = None) -> Table:
    """The reported front as a console table: test values with 95% intervals, the eval values it
    was selected on, and whether each point beats the cutoff curve (evaluate/cutoff.py)."""
    k = maximize.rsplit("_", 1)[-1]
    table = Table(title=f"Pareto front on the test split: pass@{k} (max) vs mean tokens (min), 95% intervals over prompts")
    for col in ["trial", "step", f"test pass@{k}", "test tokens", f"eval pass@{k}", "eval tokens", "vs cutoff", *(p.split(".")[-1] for p in params)]:
        table.add_column(col)
    rows = list(front) + ([base] if base is not None and all(p is not base for p in front) else [])
    for p in sorted(rows, key=lambda p: p.get("test_mean_tokens", p.get(minimize, 0))):
        values = (f"{v:.3g}" if isinstance(v, float) else str(v) for v in (p.get(key, "-") for key in params))
        style = "dim" if p is base and all(q is not base for q in front) else None
        table.add_row(str(p["trial"]), str(p["step"]), _ci(p, "test_pass_at_k", "{:.3f}"), _ci(p, "test_mean_tokens", "{:.1f}"),
                      _num(p.get(maximize), "{:.3f}"), _num(p.get(minimize), "{:.1f}"), _vs_cutoff(p, cutoff, p is base), *values, style=style)
    return table


def _ci(p: dict, key: str, fmt: str) -> str:
    if key not in p:
        return "-"
    return f"{fmt.format(p[key])} [{fmt.format(p[key + '_lo'])}, {fmt.format(p[key + '_hi'])}]"


def _num(v, fmt: str) -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "-"


def _vs_cutoff(p: dict, cutoff: list[dict] | None, is_base: bool) -> str:
    if is_base:
        return "(the base)"
    if not cutoff or "test_pass_at_k" not in p:
        return "-"
    curve = cutoff_pass_at(cutoff, p["test_mean_tokens"])
    margin = p["test_pass_at_k"] - curve
    if not beats_cutoff(p, cutoff):
        return f"[red]does not beat ({margin:+.3f})[/red]"
    return f"beats ({margin:+.3f})" if p["test_pass_at_k_lo"] > curve else f"beats ({margin:+.3f}, within CI)"
