"""How a sweep reads in MLflow's UI: the experiment's kind, trial run names, the parent run's description.

Pure functions of plain data (no Ray): the tracker (`report/tracking.py`) calls them.
"""

from __future__ import annotations

import math

KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"  # MLflow 3's "Model training" view; without it the UI may pick GenAI
NOTE_TAG = "mlflow.note.content"  # a run's (or experiment's) markdown description in the UI
MAX_NOTE = 8000  # MLflow's limit on a tag value

# the knobs a person scans first, in this order; other sampled knobs follow by their last path part
NAMED_KNOBS = {"algo.objective": "", "algo.alpha": "alpha", "train.lr": "lr", "algo.kl_coef": "KL"}


def mark_training_experiment(client, experiment_id: str) -> None:
    """Set the experiment's kind to model training, unless a person (or MLflow) already set one."""
    if not client.get_experiment(experiment_id).tags.get(KIND_TAG):
        client.set_experiment_tag(experiment_id, KIND_TAG, TRAINING_KIND)


def fmt(value) -> str:
    return format(value, ".3g") if isinstance(value, float) else str(value)


def trial_run_name(trial_id: str, config: dict) -> str:
    """'maxrl alpha=0.2 lr=0.000123 KL=0.001 (a1b2c_00003)': the sampled knobs, then Tune's trial id."""
    parts = [f"{label}={fmt(config[k])}" if label else fmt(config[k]) for k, label in NAMED_KNOBS.items() if k in config]
    parts += [f"{k.rsplit('.', 1)[-1]}={fmt(v)}" for k, v in sorted(config.items()) if k not in NAMED_KNOBS]
    return " ".join([*parts, f"({trial_id})"])


def space_markdown(space) -> str:
    """The search space (a `SearchSpace`) as a markdown table plus its budget and sampler."""
    rows = ["| knob | searched over |", "|---|---|"]
    for key, spec in space.params.items():
        if spec.type == "categorical":
            values = "one of " + ", ".join(fmt(c) for c in spec.choices)
        else:
            values = f"{fmt(spec.low)} to {fmt(spec.high)}" + (", log scale" if spec.log else "") + (" (integers)" if spec.type == "int" else "")
        rows.append(f"| `{key}` | {values} |")
    budget = space.budget
    rows.append("")
    rows.append(f"{budget.trials} trials, {budget.max_concurrent} at a time, proposed by Optuna's `{space.sampler}` sampler (seed {space.seed}).")
    return "\n".join(rows)


def metric_label(name: str) -> str:
    """'eval/pass_at_4' -> 'pass@4' (MLflow's metric names cannot hold '@'; people read it)."""
    tail = name.split("/")[-1]
    return "pass@" + tail[len("pass_at_"):] if tail.startswith("pass_at_") else tail.replace("_", " ")


def _cell(value, digits: str) -> str:
    return format(value, digits) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _change(value, base) -> str:
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (value, base)) or base == 0:
        return ""
    return f" ({(value - base) / abs(base):+.0%})"


def front_markdown(front: list[dict], base: dict | None, maximize: str, minimize: str, knobs: list[str], max_rows: int = 30) -> str:
    """The front as a table, shortest first, with the change against the base policy.

    At most `max_rows` rows: MLflow caps a tag (the note) at 8000 characters.
    """
    head = ["trial", "step", metric_label(maximize), "mean tokens", *(NAMED_KNOBS.get(k) or k.rsplit(".", 1)[-1] for k in knobs)]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = base or {}
    for p in front[:max_rows]:
        cells = [str(p.get("trial", "-")), str(p.get("step", "-")),
                 _cell(p.get(maximize), ".3f") + _delta(p.get(maximize), base.get(maximize)),
                 _cell(p.get(minimize), ".1f") + _change(p.get(minimize), base.get(minimize)),
                 *(fmt(p[k]) if k in p else "-" for k in knobs)]
        rows.append("| " + " | ".join(cells) + " |")
    if len(front) > max_rows:
        rows.append(f"\n{len(front) - max_rows} more points on the front: see `pareto_front.csv` (column `on_front`).")
    return "\n".join(rows)


def _delta(value, base) -> str:
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (value, base)):
        return ""
    return f" ({value - base:+.3f})"


HOW_TO_READ = (
    "Each point is a checkpoint: one evaluation of one trial on held-out prompts. It is on the front "
    "when no other checkpoint is at least as accurate ({acc}, higher is better) and at least as short "
    "(mean tokens per response, lower is better) while strictly better in one of the two. Read the front "
    "from the shortest point to the most accurate: each step right buys accuracy with tokens, and the "
    "knobs in its row say which settings bought it. The base policy (before RL) is the reference: a point "
    "above it and to its left improved both. Hover the points of `pareto_front.html` in Artifacts for "
    "every checkpoint; each trial's own run (nested below) holds its training curves and `coverage_curve.png`."
)


def sweep_note(name: str, front: list[dict], base: dict | None, maximize: str, minimize: str, knobs: list[str], space_md: str,
               split: str = "the eval split (selection; the test front replaces it when the sweep ends)") -> str:
    """The parent run's description (markdown): front, base policy, search space, how to read it."""
    acc = metric_label(maximize)
    parts = [f"**Sweep `{name}`**: the Pareto front of {acc} (maximised) against mean tokens (minimised)."]
    parts += [f"### Pareto front, on {split}", front_markdown(front, base, maximize, minimize, knobs) if front else "_No checkpoint evaluated yet: the front appears as trials report._"]
    if base:
        figures = [f"{metric_label(k)} {_cell(v, '.3f')}" for k, v in sorted(base.items(), key=lambda kv: _k_order(kv[0])) if k.startswith("eval/pass_at_")]
        figures.append(f"mean tokens {_cell(base.get(minimize), '.1f')}")
        parts += ["### Base policy (before RL, same held-out prompts)", ", ".join(figures)]
    parts += ["### Search space", space_md, "### How to read the front", HOW_TO_READ.format(acc=acc)]
    text = "\n\n".join(parts) + "\n"
    return text if len(text) <= MAX_NOTE else text[: MAX_NOTE - 40] + "\n\n_(cut at MLflow's tag limit)_\n"


def _k_order(key: str) -> int:
    tail = key.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


# MLflow 3.17's UI picks its GenAI or model-training view from the page's `workflowType` (else the
# browser's last choice, GenAI when new), not from the experiment's kind tag: links carry it.
TRAINING_VIEW = "workflowType=machine_learning"


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs in MLflow's model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def run_url(base: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """A run's page (or one of its tabs, e.g. 'artifacts/pareto_front.html') in the model-training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{'/' + tab if tab else ''}?{TRAINING_VIEW}"


def ui_address(tracking_uri: str) -> str:
    """Where a person opens MLflow's UI: the tracking server itself, else the local `mlflow ui` we suggest."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
