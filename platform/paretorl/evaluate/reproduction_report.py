"""The reproduction's report: report.md, its figures and summary.json, from a `Summary`.

A study the run did not make gets one line saying so; the training-log table (per arm, first
and last quarter of steps) is the evidence a verdict that did not show points to.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from paretorl.evaluate.reproduction import ALL_WRONG, Summary, mean_band, ratio_text

# (metric, column heading) of the training-log table; fractions are shown as percentages
TRAINING_COLUMNS = (
    ("train/correct_frac", "pass rate"),
    (ALL_WRONG, "all-wrong groups"),
    ("train/all_correct_groups_frac", "all-correct groups"),
    ("train/zero_adv_groups_frac", "zero-advantage groups"),
    ("train/rows_computed_frac", "rows computed"),
    ("train/mean_tokens", "tokens"),
)
TIMING_COLUMNS = (("train/step_seconds", "step s"), ("rollout/seconds", "rollout s"), ("train/update_seconds", "update s"))


def write_report(s: Summary, out_dir: Path, header: dict) -> Path:
    """report.md plus its PNGs (and summary.json) under out_dir; returns the Markdown's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# Reproduction: {header.get('name', '')}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k != "name"]
    lines += ["", "## Verdicts", "", "| claim | shown | evidence |", "|---|---|---|"]
    for v in s.verdicts:
        mark = {True: "yes", False: "**no**", None: "not measured"}[v["shown"]]
        lines.append(f"| {v['claim']} | {mark} | {v['evidence']} |")
    if s.missing:
        lines += ["", f"Arms without a final evaluation (failed or cut short): {', '.join(s.missing)}."]
    lines += _objectives_section(s, out_dir)
    lines += _alpha_section(s, out_dir)
    lines += _ablation_section(s, out_dir)
    lines += _training_section(s, out_dir)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out_dir / "summary.json").write_text(json.dumps({
        "studies": list(s.design.studies), "ks": s.ks, "base": s.base, "curves": s.curves,
        "samples_to_match": {k: {"mean_curves": v["mean_curves"], "per_seed": {str(a): b for a, b in v["per_seed"].items()}} for k, v in s.match.items()},
        "alpha": {str(a): r for a, r in s.alpha.items()}, "ablation": s.ablation, "training": s.training, "verdicts": s.verdicts, "missing": s.missing,
    }, indent=1, default=float))
    return path


def _not_run(s: Summary, study: str) -> list[str]:
    return [] if study in s.design.studies else ["", f"Not run in this experiment (its studies: {', '.join(s.design.studies)})."]


def _objectives_section(s: Summary, out_dir: Path) -> list[str]:
    lines = ["", "## Objectives at alpha = 0: held-out pass@k (mean over seeds, 95% t-interval)", *_not_run(s, "objectives")]
    if "objectives" not in s.design.studies:
        return lines
    lines += ["", "| objective | seeds | " + " | ".join(f"pass@{k}" for k in s.ks) + " |", "|---|---|" + "---|" * len(s.ks)]
    lines.append("| base policy | - | " + " | ".join(f"{s.base.get(f'eval/pass_at_{k}', math.nan):.3f}" for k in s.ks) + " |")
    for objective, c in s.curves.items():
        cells = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if len(c["seeds"]) > 1 else f"{m:.3f}" for m, lo, hi in zip(c["mean"], c["lo"], c["hi"])]
        lines.append(f"| {objective} | {len(c['seeds'])} | " + " | ".join(cells) + " |")
    for objective, m in s.match.items():
        per = ", ".join(f"seed {k}: {ratio_text(v)}" for k, v in m["per_seed"].items())
        lines += ["", f"Samples to match GRPO's pass@{s.ks[-1]} ({objective} over GRPO): {ratio_text(m['mean_curves'])} on the seed-mean curves; {per}."]
    if plot_passk(s, out_dir / "passk_curves.png"):
        lines += ["", "![pass@k curves](passk_curves.png)"]
    return lines


def _alpha_section(s: Summary, out_dir: Path) -> list[str]:
    lines = ["", f"## Length penalty ({s.design.alpha_objective}): tokens against pass@1 (final evaluation, mean over seeds)", *_not_run(s, "alpha")]
    if "alpha" not in s.design.studies:
        return lines
    lines += ["", "| alpha | seeds | mean tokens | change | mean tokens (correct) | pass@1 | change (points) |", "|---|---|---|---|---|---|---|"]
    ref = s.alpha.get(0.0)
    for a, r in sorted(s.alpha.items()):
        t, p, tc = np.mean(r["tokens"]), np.mean(r["pass1"]), np.nanmean(r["tokens_correct"]) if any(np.isfinite(r["tokens_correct"])) else math.nan
        dt = f"{100 * (t / np.mean(ref['tokens']) - 1):+.0f}%" if ref else "-"
        dp = f"{100 * (p - np.mean(ref['pass1'])):+.1f}" if ref else "-"
        lines.append(f"| {a:g} | {len(r['seeds'])} | {t:.1f} ± {np.std(r['tokens']):.1f} | {dt} | {tc:.1f} | {p:.3f} ± {np.std(r['pass1']):.3f} | {dp} |")
    lines.append(f"| base policy | - | {s.base['eval/mean_tokens']:.1f} | | {s.base.get('eval/mean_tokens_correct', math.nan):.1f} | {s.base['eval/pass_at_1']:.3f} | |")
    if plot_alpha(s, out_dir / "alpha_tokens.png"):
        lines += ["", "![tokens against pass@1 by alpha](alpha_tokens.png)"]
    return lines


def _ablation_section(s: Summary, out_dir: Path) -> list[str]:
    lines = ["", "## Group-std ablation: pass@1 and tokens over training (mean over seeds)", *_not_run(s, "ablation")]
    if "ablation" not in s.design.studies:
        return lines
    lines.append("")
    for label, r in s.ablation.items():
        p, t = np.mean(r["pass1"], 0), np.mean(r["tokens"], 0)
        lines.append(f"- {label}: " + ", ".join(f"step {st}: pass@1 {pp:.3f}, {tt:.1f} tokens" for st, pp, tt in zip(r["steps"], p, t)))
    if plot_ablation(s, out_dir / "ablation.png"):
        lines += ["", "![ablation over training](ablation.png)"]
    return lines


def _training_section(s: Summary, out_dir: Path) -> list[str]:
    lines = ["", "## Training logs: what each update saw (mean over seeds; first -> last quarter of steps)", ""]
    if not s.training:
        return lines + ["No per-step training metrics were found (the arms' MLflow runs)."]
    lines += [
        "Groups whose responses are all wrong, or all correct with equal rewards, have zero advantage under every objective: they carry "
        + "no gradient. All-wrong groups are derived at alpha = 0 only (zero-advantage minus all-correct).",
        "",
        "| arm | seeds | " + " | ".join(name for _, name in TRAINING_COLUMNS + TIMING_COLUMNS) + " |",
        "|---|---|" + "---|" * (len(TRAINING_COLUMNS) + len(TIMING_COLUMNS)),
    ]
    for label, t in s.training.items():
        m = t["metrics"]
        cells = [_first_last(key, m.get(key)) for key, _ in TRAINING_COLUMNS]
        cells += [f"{np.median(m[key]['mean']):.2f}" if key in m else "-" for key, _ in TIMING_COLUMNS]
        lines.append(f"| {label} | {len(t['seeds'])} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Seconds are medians over steps of the per-step mean over seeds.")
    if plot_training(s, out_dir / "training.png"):
        lines += ["", "![training logs](training.png)"]
    return lines


def _first_last(key: str, m: dict | None) -> str:
    if not m:
        return "-"
    fmt = (lambda v: f"{v:.1f}") if key.endswith("tokens") else (lambda v: f"{100 * v:.0f}%")
    return f"{fmt(m['first'])} -> {fmt(m['last'])}"


# --- figures ----------------------------------------------------------------------------------
def _axes(ncols: int = 1, width: float = 6.5):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 4.2))
    return plt, fig, axes


def _save(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> bool:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_passk(s: Summary, path: Path) -> bool:
    if not s.curves:
        return False
    plt, fig, ax = _axes()
    ax.plot(s.ks, [s.base.get(f"eval/pass_at_{k}", math.nan) for k in s.ks], "k--", label="base policy")
    for objective, c in s.curves.items():
        line, = ax.plot(s.ks, c["mean"], marker="o", label=f"{objective} ({len(c['seeds'])} seeds)")
        if len(c["seeds"]) > 1:
            ax.fill_between(s.ks, c["lo"], c["hi"], color=line.get_color(), alpha=0.2)
    ax.set_xscale("log", base=2)
    return _save(plt, fig, ax, path, "k (samples per prompt)", "held-out pass@k", "pass@k at the end of training, alpha = 0 (band: 95% t-interval over seeds)")


def plot_alpha(s: Summary, path: Path) -> bool:
    if not s.alpha:
        return False
    plt, fig, ax = _axes()
    for a, r in sorted(s.alpha.items()):
        ax.errorbar(np.mean(r["tokens"]), np.mean(r["pass1"]), xerr=np.std(r["tokens"]), yerr=np.std(r["pass1"]), marker="o", capsize=3, label=f"alpha {a:g}")
        ax.scatter(r["tokens"], r["pass1"], s=10, alpha=0.4)
    ax.scatter([s.base["eval/mean_tokens"]], [s.base["eval/pass_at_1"]], marker="*", s=120, c="k", label="base policy")
    return _save(plt, fig, ax, path, "mean tokens per response (lower is better)", "held-out pass@1", f"length penalty with {s.design.alpha_objective}: final evaluation (dots: seeds)")


def plot_ablation(s: Summary, path: Path) -> bool:
    if not s.ablation:
        return False
    plt, fig, (ax1, ax2) = _axes(2, 5.5)
    for label, r in s.ablation.items():
        for ax, key in ((ax1, "pass1"), (ax2, "tokens")):
            mean, lo, hi = mean_band(np.array(r[key]))
            line, = ax.plot(r["steps"], mean, marker="o", label=f"{label} ({len(r[key])} seeds)")
            if len(r[key]) > 1:
                ax.fill_between(r["steps"], lo, hi, color=line.get_color(), alpha=0.2)
    ax2.set_xlabel("RL step")
    ax2.set_ylabel("mean tokens per response")
    ax2.grid(alpha=0.3)
    return _save(plt, fig, ax1, path, "RL step", "held-out pass@1", "group-std ablation: the length penalty with and without division by the group std")


def plot_training(s: Summary, path: Path) -> bool:
    """Per arm over steps: the training pass rate, and the shares of all-correct (solid) and all-wrong (dashed) groups."""
    if not s.training:
        return False
    plt, fig, (ax1, ax2) = _axes(2, 5.5)
    for label, t in s.training.items():
        m = t["metrics"]
        if "train/correct_frac" in m:
            ax1.plot(m["train/correct_frac"]["steps"], m["train/correct_frac"]["mean"], label=label)
        if "train/all_correct_groups_frac" in m:
            line, = ax2.plot(m["train/all_correct_groups_frac"]["steps"], m["train/all_correct_groups_frac"]["mean"], label=f"{label} all correct")
            if ALL_WRONG in m:
                ax2.plot(m[ALL_WRONG]["steps"], m[ALL_WRONG]["mean"], "--", color=line.get_color(), label=f"{label} all wrong")
    ax2.set_xlabel("RL step")
    ax2.set_ylabel("share of groups")
    ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend(fontsize=7)
    return _save(plt, fig, ax1, path, "RL step", "training pass rate", "training logs (mean over seeds)")
