"""Plots of the reported front: the test front with 95% interval bars, every checkpoint's eval
values faintly, the base policy, and the cutoff baseline curve.

Figures are built here and written elsewhere (`figure_html.write_figure_html` for the interactive view), so
how the HTML is written can change without touching what it shows.
"""

from __future__ import annotations

from pathlib import Path

PASS, TOKENS = "test_pass_at_k", "test_mean_tokens"


def _bars(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(below, above) distances from each row's value to its interval's ends."""
    return [r[key] - r[f"{key}_lo"] for r in rows], [r[f"{key}_hi"] - r[key] for r in rows]


def _hover(p: dict) -> str:
    params = " ".join(f"{k}={p[k]}" for k in sorted(p) if k.startswith(("algo.", "train.", "model.", "sft.", "task.")))
    ci = f"pass@{p['k']} {p[PASS]:.3f} [{p[f'{PASS}_lo']:.3f}, {p[f'{PASS}_hi']:.3f}]<br>tokens {p[TOKENS]:.1f} [{p[f'{TOKENS}_lo']:.1f}, {p[f'{TOKENS}_hi']:.1f}]"
    return f"trial {p['trial']} step {p['step']}<br>{ci}<br>{params}"


def front_figure(points: list[dict], front: list[dict], base: dict, cutoff: list[dict], maximize: str, minimize: str):
    """The plotly Figure of the reported front (see the module doc)."""
    import plotly.graph_objects as go

    k = base["k"]
    fig = go.Figure()
    evals = [p for p in points if isinstance(p.get(maximize), (int, float)) and isinstance(p.get(minimize), (int, float))]
    fig.add_trace(go.Scatter(
        x=[p[minimize] for p in evals], y=[p[maximize] for p in evals], mode="markers", name="checkpoints (eval split)",
        marker={"color": "lightgray", "size": 7}, opacity=0.5,
        text=[f"trial {p['trial']} step {p['step']} (eval split)" for p in evals], hoverinfo="text+x+y",
    ))
    cut = sorted(cutoff, key=lambda r: r[TOKENS])
    fig.add_trace(go.Scatter(
        x=[r[TOKENS] for r in cut], y=[r[PASS] for r in cut], mode="lines+markers", name="base cut at a token budget (test)",
        line={"dash": "dash", "color": "gray"}, marker={"size": 6},
        error_y={"type": "data", "symmetric": False, "array": _bars(cut, PASS)[1], "arrayminus": _bars(cut, PASS)[0], "thickness": 1},
        text=[f"budget {r['budget']} tokens" for r in cut], hoverinfo="text+x+y",
    ))
    for rows, name, marker, line in (
        (front, "Pareto front (test split, 95% CI)", {"size": 10}, {"shape": "hv"}),
        ([base], "base policy (test split)", {"size": 14, "symbol": "star", "color": "black"}, None),
    ):
        below_y, above_y = _bars(rows, PASS)
        below_x, above_x = _bars(rows, TOKENS)
        fig.add_trace(go.Scatter(
            x=[r[TOKENS] for r in rows], y=[r[PASS] for r in rows], mode="lines+markers" if line else "markers", name=name,
            marker=marker, line=line,
            error_x={"type": "data", "symmetric": False, "array": above_x, "arrayminus": below_x},
            error_y={"type": "data", "symmetric": False, "array": above_y, "arrayminus": below_y},
            text=[_hover(r) for r in rows], hoverinfo="text",
        ))
    fig.update_layout(
        title=f"Pareto front on the test split: pass@{k} vs mean tokens (eval-split checkpoints in gray)",
        xaxis_title="mean tokens (lower is better)", yaxis_title=f"pass@{k} (higher is better)",
    )
    return fig


def front_png(points: list[dict], front: list[dict], base: dict, cutoff: list[dict], maximize: str, minimize: str, path: Path) -> None:
    """The same view as a static PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = base["k"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    evals = [p for p in points if isinstance(p.get(maximize), (int, float)) and isinstance(p.get(minimize), (int, float))]
    ax.scatter([p[minimize] for p in evals], [p[maximize] for p in evals], c="lightgray", alpha=0.6, s=18, label="checkpoints (eval split)")
    cut = sorted(cutoff, key=lambda r: r[TOKENS])
    ax.errorbar([r[TOKENS] for r in cut], [r[PASS] for r in cut], yerr=_bars(cut, PASS), fmt="--o", color="gray", ms=4, lw=1,
                elinewidth=0.8, capsize=2, label="base cut at a token budget (test)")
    ax.errorbar([p[TOKENS] for p in front], [p[PASS] for p in front], xerr=_bars(front, TOKENS), yerr=_bars(front, PASS),
                fmt="o", color="C0", ms=6, capsize=3, label="Pareto front (test split, 95% CI)")
    ax.step([p[TOKENS] for p in front], [p[PASS] for p in front], where="post", color="C0", lw=1)
    ax.errorbar([base[TOKENS]], [base[PASS]], xerr=_bars([base], TOKENS), yerr=_bars([base], PASS), fmt="*", color="black",
                ms=13, capsize=3, label="base policy (test split)")
    for p in front:
        ax.annotate(f"{p['trial']}@{p['step']}", (p[TOKENS], p[PASS]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("mean tokens (lower is better)")
    ax.set_ylabel(f"pass@{k} (higher is better)")
    ax.set_title(f"Pareto front on the test split: pass@{k} vs mean tokens", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
