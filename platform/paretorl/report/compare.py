"""Several sweeps' Pareto fronts on one plot (dashboards/front.py): with intervals where a sweep has them.

A sweep's `pareto_front.csv` (on its parent run) marks its front with `on_front`. Where the sweep
re-evaluated its front on held-out test prompts, the rows carry `test_pass_at_k`, `test_mean_tokens`
and their interval bounds (`_lo`, `_hi`) with the `k` they use: those are plotted, with error bars.
Otherwise the front's own evaluation columns (`eval/pass_at_<k>`, `eval/mean_tokens`) are.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Front:
    """One sweep's front as plotted: points sorted by tokens, each with its (lo, hi) bounds or None."""

    name: str
    k: int
    source: str  # "test" or "eval"
    points: list[dict] = field(default_factory=list)  # x, y, x_lo, x_hi, y_lo, y_hi (None: no interval), label


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _on_front(row: dict) -> bool:
    return str(row.get("on_front", "")).strip().lower() in ("true", "1")


def front_from_rows(name: str, rows: list[dict], k: int) -> Front:
    """The on-front rows of a sweep's pareto_front.csv as plot points; test columns win over eval ones."""
    front_rows = [r for r in rows if _on_front(r)]
    k = int(_number(next((r.get("k") for r in front_rows if _number(r.get("k"))), None)) or k)
    use_test = bool(front_rows) and all(_number(r.get("test_pass_at_k")) is not None and _number(r.get("test_mean_tokens")) is not None for r in front_rows)
    y_key, x_key = ("test_pass_at_k", "test_mean_tokens") if use_test else (f"eval/pass_at_{k}", "eval/mean_tokens")
    points = []
    for r in front_rows:
        x, y = _number(r.get(x_key)), _number(r.get(y_key))
        if x is None or y is None:
            continue
        knobs = " ".join(f"{key.rsplit('.', 1)[-1]}={r[key]}" for key in sorted(r) if key.startswith(("algo.", "train.")) and r[key] not in ("", None))
        points.append({
            "x": x, "y": y,
            "x_lo": _number(r.get(f"{x_key}_lo")), "x_hi": _number(r.get(f"{x_key}_hi")),
            "y_lo": _number(r.get(f"{y_key}_lo")), "y_hi": _number(r.get(f"{y_key}_hi")),
            "label": f"{name}: trial {r.get('trial', '?')} step {r.get('step', '?')}<br>{knobs}",
        })
    return Front(name, k, "test" if use_test else "eval", sorted(points, key=lambda p: (p["x"], -p["y"])))


def read_front_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _errors(points: list[dict], axis: str) -> tuple[list[float], list[float]] | None:
    """(minus, plus) distances for error bars, or None when no point has an interval on this axis."""
    if all(p[f"{axis}_lo"] is None or p[f"{axis}_hi"] is None for p in points):
        return None
    minus = [p[axis] - p[f"{axis}_lo"] if p[f"{axis}_lo"] is not None else 0.0 for p in points]
    plus = [p[f"{axis}_hi"] - p[axis] if p[f"{axis}_hi"] is not None else 0.0 for p in points]
    return minus, plus


def legend(front: Front) -> str:
    return f"{front.name} (pass@{front.k}, {'test, with intervals' if front.source == 'test' else 'eval'})"


def comparison_figure(fronts: list[Front]):
    """A plotly figure: one stepped front per sweep, error bars where the sweep has intervals."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for front in fronts:
        pts = front.points
        trace = {"x": [p["x"] for p in pts], "y": [p["y"] for p in pts], "mode": "lines+markers", "name": legend(front),
                 "line": {"shape": "hv"}, "marker": {"size": 9}, "text": [p["label"] for p in pts], "hoverinfo": "text+x+y"}
        for axis in ("x", "y"):
            bars = _errors(pts, axis)
            if bars:
                trace[f"error_{axis}"] = {"type": "data", "symmetric": False, "arrayminus": bars[0], "array": bars[1]}
        fig.add_trace(go.Scatter(**trace))
    fig.update_layout(title="Pareto fronts: pass@k against mean tokens", xaxis_title="mean tokens per response (lower is better)",
                      yaxis_title="pass@k (higher is better)", legend={"orientation": "h", "y": -0.2})
    return fig


def comparison_png(fronts: list[Front], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for front in fronts:
        pts = front.points
        xerr, yerr = _errors(pts, "x"), _errors(pts, "y")
        ax.errorbar([p["x"] for p in pts], [p["y"] for p in pts], xerr=xerr, yerr=yerr, fmt="o-", drawstyle="steps-post", capsize=3, label=legend(front))
    ax.set_xlabel("mean tokens per response (lower is better)")
    ax.set_ylabel("pass@k (higher is better)")
    ax.set_title("Pareto fronts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_comparison(fronts: list[Front], out_dir: str | Path) -> dict[str, Path]:
    """fronts.{html,png,csv} under out_dir: the overlay, interactive and static, and its points."""
    from paretorl.report.figure_html import write_figure_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"html": out / "fronts.html", "png": out / "fronts.png", "csv": out / "fronts.csv"}
    write_figure_html(comparison_figure(fronts), paths["html"])
    comparison_png(fronts, paths["png"])
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["sweep", "k", "source", "x", "y", "x_lo", "x_hi", "y_lo", "y_hi", "label"])
        writer.writeheader()
        for front in fronts:
            for p in front.points:
                writer.writerow({"sweep": front.name, "k": front.k, "source": front.source, **p})
    return paths


def comparison_note(fronts: list[Front], parent_ids: list[str]) -> str:
    rows = ["| sweep | parent run | pass@k | values | points on the front |", "|---|---|---|---|---|"]
    for front, run_id in zip(fronts, parent_ids):
        rows.append(f"| {front.name} | `{run_id}` | pass@{front.k} | {'test re-evaluation, with intervals' if front.source == 'test' else 'evaluation during the sweep'} | {len(front.points)} |")
    return ("**Comparison of Pareto fronts** (`dashboards/front.py`): each sweep's front, pass@k against mean tokens. "
            "A front further up and to the left is better; overlapping error bars mean the sweeps' points are not "
            "told apart by these prompts. `fronts.html` (hover a point for its trial and knobs), `fronts.png`, `fronts.csv`.\n\n" + "\n".join(rows) + "\n")
