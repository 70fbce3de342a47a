"""A front as files: pareto_front.csv, pareto_front.html (interactive, plotly) and
pareto_front.png (matplotlib); and a trial's coverage curve (pass@k against k) as a PNG."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from paretorl.report.figure_html import write_figure_html


def write_front(points: list[dict], front: list[dict], maximize: str, minimize: str, out_dir: str | Path) -> dict[str, Path]:
    """pareto_front.csv, pareto_front.html (interactive) and pareto_front.png under out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "pareto_front.csv", "html": out_dir / "pareto_front.html", "png": out_dir / "pareto_front.png"}
    write_points_csv(points, front, ("trial", "step", maximize, minimize), minimize, paths["csv"])
    _plot_html(points, front, maximize, minimize, paths["html"])
    _plot_png(points, front, maximize, minimize, paths["png"])
    return paths


def write_points_csv(points: list[dict], front: list[dict], first: tuple[str, ...], order_by: str, path: Path) -> None:
    """Every point as a row: `on_front`, the `first` columns, then the rest by name; front rows
    first, each group by `order_by` (rows without it last). A point lacking a column leaves it empty."""
    keys = sorted({k for p in points for k in p}, key=lambda k: (k not in first, first.index(k) if k in first else 0, k))
    front_ids = {id(p) for p in front}
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["on_front", *keys])
        writer.writeheader()
        for p in sorted(points, key=lambda p: (id(p) not in front_ids, not _finite(p.get(order_by)), p.get(order_by) if _finite(p.get(order_by)) else 0)):
            writer.writerow({"on_front": id(p) in front_ids, **p})


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _label(p: dict) -> str:
    return " ".join(f"{k}={p[k]}" for k in sorted(p) if k.startswith(("algo.", "train.")))


def _plot_html(points, front, maximize, minimize, path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[p[minimize] for p in points], y=[p[maximize] for p in points], mode="markers", name="checkpoints",
            marker={"color": "lightgray", "size": 8},
            text=[f"trial {p['trial']} step {p['step']}<br>{_label(p)}" for p in points], hoverinfo="text+x+y",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[p[minimize] for p in front], y=[p[maximize] for p in front], mode="lines+markers", name="Pareto front",
            line={"shape": "hv"}, marker={"size": 11},
            text=[f"trial {p['trial']} step {p['step']}<br>{_label(p)}" for p in front], hoverinfo="text+x+y",
        )
    )
    fig.update_layout(title=f"Pareto front: {maximize} vs {minimize}", xaxis_title=f"{minimize} (lower is better)", yaxis_title=f"{maximize} (higher is better)")
    write_figure_html(fig, path)


def _plot_png(points, front, maximize, minimize, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([p[minimize] for p in points], [p[maximize] for p in points], c="lightgray", label="checkpoints")
    ax.step([p[minimize] for p in front], [p[maximize] for p in front], where="post", marker="o", label="Pareto front")
    for p in front:
        ax.annotate(f"{p['trial']}@{p['step']}", (p[minimize], p[maximize]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"{minimize} (lower is better)")
    ax.set_ylabel(f"{maximize} (higher is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_coverage(curves: dict[str, dict[int, float]], path: str | Path, title: str) -> None:
    """pass@k against k (log scale), one line per label (e.g. per evaluation step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves.items():
        ks = sorted(curve)
        ax.plot(ks, [curve[k] for k in ks], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
