"""The papers' headline effects, measured on a designed experiment (`jobs/reproduce.py`).

Three studies share one set of trials, all at equal compute (the same steps, prompts and
samples per step; only the objective, alpha and seed differ):

- **objectives**: GRPO, MaxRL and RLOO at alpha = 0, several seeds. MaxRL's claim: its pass@k
  keeps rising with k where GRPO's flattens, so GRPO needs several times more samples to reach
  the same coverage (`samples_to_match`, docs/algorithms.md section 8).
- **alpha**: the length penalty with RLOO (Arora & Zanette's estimator) for alpha in a grid:
  alpha = 0.2 should cut mean tokens by >= 30% for <= 2 points of pass@1.
- **ablation**: the same penalty with the advantage divided by the group's reward std (GRPO)
  at alpha = 0.2: the length push no longer scales with alpha and accuracy should fall further.

Everything here works on the sweep's evaluated points (the MLflow logger's record: one dict per
trial and evaluation step with `eval/*` metrics and the trial's sampled params), so a report can
be rebuilt from any finished or interrupted run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paretorl.algos import samples_to_match

OBJ, ALPHA, SEED = "algo.objective", "algo.alpha", "train.seed"


@dataclass(frozen=True)
class Design:
    objectives: tuple[str, ...] = ("grpo", "maxrl", "rloo")
    alphas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.4)
    seeds: tuple[int, ...] = (0, 1, 2)
    alpha_objective: str = "rloo"  # the length-penalty paper's estimator
    ablation_objective: str = "grpo"  # divides the advantage by the group's reward std
    ablation_alpha: float = 0.2

    def __post_init__(self):
        if len(self.seeds) < 1 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
        if 0.0 not in self.alphas:
            raise ValueError(f"alphas must include 0.0 (the reference of the alpha study), got {self.alphas}")
        if self.ablation_alpha not in self.alphas:
            raise ValueError(f"ablation_alpha {self.ablation_alpha} must be one of alphas {self.alphas}")
        for name in ("grpo", "maxrl"):
            if name not in self.objectives:
                raise ValueError(f"objectives must include {name!r} (the headline comparison), got {self.objectives}")

    @classmethod
    def from_arms(cls, arms: list[dict]) -> "Design":
        """The design a list of arms was made from (a run's record keeps its arms)."""
        seeds = tuple(dict.fromkeys(int(a[SEED]) for a in arms))
        objectives = tuple(dict.fromkeys(a[OBJ] for a in arms if float(a[ALPHA]) == 0.0))
        alphas = tuple(sorted({float(a[ALPHA]) for a in arms if a[OBJ] == cls.alpha_objective}))
        return cls(objectives=objectives, alphas=alphas, seeds=seeds)

    def arms(self) -> list[dict]:
        """Every distinct trial, seed by seed, so a cut-short run holds whole studies for its first seeds."""
        out: list[dict] = []
        for seed in self.seeds:
            wanted = [(o, 0.0) for o in self.objectives]
            wanted += [(self.alpha_objective, a) for a in self.alphas]
            wanted += [(self.ablation_objective, self.ablation_alpha)]
            for objective, alpha in wanted:
                arm = {OBJ: objective, ALPHA: float(alpha), SEED: int(seed)}
                if arm not in out:
                    out.append(arm)
        return out


def arm_label(objective: str, alpha: float) -> str:
    return f"{objective} a={alpha:g}"


# --- from evaluated points to per-arm results ------------------------------------------------
def by_arm(points: list[dict]) -> dict[tuple[str, float, int], list[dict]]:
    """Trial points grouped by (objective, alpha, seed), each list sorted by step (the base point is skipped)."""
    out: dict[tuple[str, float, int], list[dict]] = {}
    for p in points:
        if p.get("trial") == "base" or OBJ not in p:
            continue
        out.setdefault((p[OBJ], float(p[ALPHA]), int(p[SEED])), []).append(p)
    return {k: sorted(v, key=lambda p: p["step"]) for k, v in out.items()}


def curve_of(point: dict) -> dict[int, float]:
    prefix = "eval/pass_at_"
    return dict(sorted((int(k[len(prefix):]), float(v)) for k, v in point.items() if k.startswith(prefix)))


def mean_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds (axis 0) and a 95% Student-t confidence band (the mean itself for one seed)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = values.mean(0)
    n = values.shape[0]
    if n < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.975, n - 1) * values.std(0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


@dataclass
class Summary:
    design: Design
    base: dict  # the base policy's eval metrics
    ks: list[int]
    curves: dict[str, dict]  # objective -> {"seeds": [...], "values": [[pass@k]], "mean", "lo", "hi"}
    match: dict  # samples to match: on the mean curves and per seed
    alpha: dict[float, dict]  # alpha -> {"tokens": [...per seed], "pass1": [...], ...}
    ablation: dict[str, dict]  # label -> {"steps": [...], "pass1": [[per seed]], "tokens": [[...]]}
    verdicts: list[dict]  # {"claim", "shown": bool | None, "evidence"}
    missing: list[str]  # arms without a final evaluation


def summarize(points: list[dict], design: Design, base: dict, final_step: int) -> Summary:
    arms = by_arm(points)
    finals = {k: v[-1] for k, v in arms.items() if v and v[-1]["step"] == final_step}
    missing = [f"{arm_label(o, a)} seed {s}" for o, a, s in (tuple(arm.values()) for arm in design.arms()) if (o, a, s) not in finals]
    ks = sorted(curve_of(base)) or sorted({k for p in finals.values() for k in curve_of(p)})

    curves: dict[str, dict] = {}
    for objective in design.objectives:
        seeds = [s for s in design.seeds if (objective, 0.0, s) in finals]
        if not seeds:
            continue
        values = np.array([[curve_of(finals[(objective, 0.0, s)]).get(k, np.nan) for k in ks] for s in seeds])
        mean, lo, hi = mean_band(values)
        curves[objective] = {"seeds": seeds, "values": values.tolist(), "mean": mean.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}

    match = _match(curves, ks)
    alpha = {}
    for a in design.alphas:
        rows = [finals[(design.alpha_objective, a, s)] for s in design.seeds if (design.alpha_objective, a, s) in finals]
        if rows:
            alpha[a] = {
                "seeds": [int(r[SEED]) for r in rows],
                "tokens": [r["eval/mean_tokens"] for r in rows],
                "pass1": [r["eval/pass_at_1"] for r in rows],
                "tokens_correct": [r.get("eval/mean_tokens_correct", math.nan) for r in rows],
            }
    ablation = {}
    for objective, a in ((design.alpha_objective, 0.0), (design.alpha_objective, design.ablation_alpha), (design.ablation_objective, design.ablation_alpha)):
        runs = [arms[(objective, a, s)] for s in design.seeds if (objective, a, s) in finals]
        if runs:
            steps = [p["step"] for p in runs[0]]
            runs = [r for r in runs if [p["step"] for p in r] == steps]
            ablation[arm_label(objective, a)] = {
                "steps": [0, *steps],
                "pass1": [[base["eval/pass_at_1"], *(p["eval/pass_at_1"] for p in r)] for r in runs],
                "tokens": [[base["eval/mean_tokens"], *(p["eval/mean_tokens"] for p in r)] for r in runs],
            }
    summary = Summary(design, base, ks, curves, match, alpha, ablation, [], missing)
    summary.verdicts = verdicts(summary)
    return summary


def _match(curves: dict[str, dict], ks: list[int]) -> dict:
    """MaxRL's (and RLOO's) samples-to-match ratio over GRPO, on the seed-mean curves and per seed."""
    out: dict = {}
    if "grpo" not in curves:
        return out
    grpo = curves["grpo"]
    for objective in ("maxrl", "rloo"):
        if objective not in curves:
            continue
        mine = curves[objective]
        per_seed = {}
        for s, row in zip(mine["seeds"], mine["values"]):
            if s in grpo["seeds"]:
                per_seed[s] = samples_to_match(ks, row, grpo["values"][grpo["seeds"].index(s)])
        out[objective] = {"mean_curves": samples_to_match(ks, mine["mean"], grpo["mean"]), "per_seed": per_seed}
    return out


def verdicts(s: Summary) -> list[dict]:
    """The issue's three bars, each shown / not shown / not measured, with the numbers behind it."""
    out = []
    k_max = s.ks[-1] if s.ks else None
    if "maxrl" in s.curves and "grpo" in s.curves:
        m, g = s.curves["maxrl"]["mean"][-1], s.curves["grpo"]["mean"][-1]
        ratio = s.match["maxrl"]["mean_curves"]
        seeds = len(set(s.curves["maxrl"]["seeds"]) & set(s.curves["grpo"]["seeds"]))
        shown = m > g and ratio >= 2 and seeds >= 3
        per = ", ".join(f"seed {k}: {_ratio(v)}" for k, v in s.match["maxrl"]["per_seed"].items())
        out.append({
            "claim": f"MaxRL's pass@{k_max} above GRPO's, samples-to-match >= 2, over >= 3 seeds",
            "shown": shown,
            "evidence": f"pass@{k_max} MaxRL {m:.3f} vs GRPO {g:.3f}; samples to match (mean curves) {_ratio(ratio)} ({per}); {seeds} seeds",
        })
    else:
        out.append({"claim": "MaxRL vs GRPO", "shown": None, "evidence": "a final evaluation of MaxRL or GRPO at alpha 0 is missing"})
    if 0.0 in s.alpha and s.design.ablation_alpha in s.alpha:
        a = s.design.ablation_alpha
        t0, t1 = np.mean(s.alpha[0.0]["tokens"]), np.mean(s.alpha[a]["tokens"])
        p0, p1 = np.mean(s.alpha[0.0]["pass1"]), np.mean(s.alpha[a]["pass1"])
        cut = 1 - t1 / t0
        out.append({
            "claim": f"alpha = {a:g} cuts mean tokens >= 30% against alpha = 0 with pass@1 within 2 points ({s.design.alpha_objective})",
            "shown": bool(cut >= 0.30 and p0 - p1 <= 0.02),
            "evidence": f"tokens {t0:.1f} -> {t1:.1f} ({-100 * cut:+.0f}%); pass@1 {p0:.3f} -> {p1:.3f} ({100 * (p1 - p0):+.1f} points)",
        })
    else:
        out.append({"claim": "alpha cuts tokens", "shown": None, "evidence": "alpha = 0 or the ablation's alpha has no final evaluation"})
    abl = arm_label(s.design.ablation_objective, s.design.ablation_alpha)
    ref = arm_label(s.design.alpha_objective, s.design.ablation_alpha)
    if abl in s.ablation and ref in s.ablation:
        base = s.base["eval/pass_at_1"]
        final_abl = [r[-1] for r in s.ablation[abl]["pass1"]]
        final_ref = [r[-1] for r in s.ablation[ref]["pass1"]]
        lost_abl, lost_ref = base - np.mean(final_abl), base - np.mean(final_ref)
        p = welch_p(final_ref, final_abl)
        out.append({
            "claim": f"dividing by the group std ({abl}) loses more accuracy than {ref} (Welch t-test over seeds, p < 0.05)",
            "shown": bool(lost_abl > lost_ref and p < 0.05),
            "evidence": f"pass@1 change from the base policy ({base:.3f}): {abl} {-100 * lost_abl:+.1f} points, {ref} {-100 * lost_ref:+.1f} points; "
            f"difference {100 * (lost_abl - lost_ref):.1f} points, p = {p:.2g} over {len(final_abl)} and {len(final_ref)} seeds",
        })
    else:
        out.append({"claim": "group-std ablation", "shown": None, "evidence": "an ablation arm has no final evaluation"})
    return out


def welch_p(a: list[float], b: list[float]) -> float:
    """One-sided Welch t-test p-value that mean(a) > mean(b); 1.0 with fewer than 2 values a side.

    Seeds that agree exactly (no spread) make any difference certain: p = 0 if mean(a) > mean(b).
    """
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return 1.0
    if np.var(a) == 0 and np.var(b) == 0:
        return 0.0 if np.mean(a) > np.mean(b) else 1.0
    return float(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)


def _ratio(r: float) -> str:
    return "not reached (< 1x)" if r == 0 else f"{r:.2f}x"


# --- the report ----------------------------------------------------------------------------------
def write_report(s: Summary, out_dir: Path, header: dict) -> Path:
    """report.md plus its PNGs (and summary.json) under out_dir; returns the Markdown's path."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "passk_curves.png": plot_passk(s, out_dir / "passk_curves.png"),
        "alpha_tokens.png": plot_alpha(s, out_dir / "alpha_tokens.png"),
        "ablation.png": plot_ablation(s, out_dir / "ablation.png"),
    }
    lines = [f"# Reproduction: {header.get('name', '')}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items() if k != "name"]
    lines += ["", "## Verdicts", "", "| claim | shown | evidence |", "|---|---|---|"]
    for v in s.verdicts:
        mark = {True: "yes", False: "**no**", None: "not measured"}[v["shown"]]
        lines.append(f"| {v['claim']} | {mark} | {v['evidence']} |")
    if s.missing:
        lines += ["", f"Arms without a final evaluation (failed or cut short): {', '.join(s.missing)}."]

    lines += ["", "## Objectives at alpha = 0: held-out pass@k (mean over seeds, 95% t-interval)", ""]
    lines += ["| objective | seeds | " + " | ".join(f"pass@{k}" for k in s.ks) + " |", "|---|---|" + "---|" * len(s.ks)]
    lines.append("| base policy | - | " + " | ".join(f"{s.base.get(f'eval/pass_at_{k}', math.nan):.3f}" for k in s.ks) + " |")
    for objective, c in s.curves.items():
        cells = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if len(c["seeds"]) > 1 else f"{m:.3f}" for m, lo, hi in zip(c["mean"], c["lo"], c["hi"])]
        lines.append(f"| {objective} | {len(c['seeds'])} | " + " | ".join(cells) + " |")
    for objective, m in s.match.items():
        per = ", ".join(f"seed {k}: {_ratio(v)}" for k, v in m["per_seed"].items())
        lines.append("")
        lines.append(f"Samples to match GRPO's pass@{s.ks[-1]} ({objective} over GRPO): {_ratio(m['mean_curves'])} on the seed-mean curves; {per}.")
    if figures["passk_curves.png"]:
        lines += ["", "![pass@k curves](passk_curves.png)"]

    lines += ["", f"## Length penalty ({s.design.alpha_objective}): tokens against pass@1 (final evaluation, mean over seeds)", ""]
    lines += ["| alpha | seeds | mean tokens | change | mean tokens (correct) | pass@1 | change (points) |", "|---|---|---|---|---|---|---|"]
    ref = s.alpha.get(0.0)
    for a, r in sorted(s.alpha.items()):
        t, p, tc = np.mean(r["tokens"]), np.mean(r["pass1"]), np.nanmean(r["tokens_correct"]) if any(np.isfinite(r["tokens_correct"])) else math.nan
        dt = f"{100 * (t / np.mean(ref['tokens']) - 1):+.0f}%" if ref else "-"
        dp = f"{100 * (p - np.mean(ref['pass1'])):+.1f}" if ref else "-"
        lines.append(f"| {a:g} | {len(r['seeds'])} | {t:.1f} ± {np.std(r['tokens']):.1f} | {dt} | {tc:.1f} | {p:.3f} ± {np.std(r['pass1']):.3f} | {dp} |")
    lines.append(f"| base policy | - | {s.base['eval/mean_tokens']:.1f} | | {s.base.get('eval/mean_tokens_correct', math.nan):.1f} | {s.base['eval/pass_at_1']:.3f} | |")
    if figures["alpha_tokens.png"]:
        lines += ["", "![tokens against pass@1 by alpha](alpha_tokens.png)"]

    lines += ["", "## Group-std ablation: pass@1 and tokens over training (mean over seeds)", ""]
    for label, r in s.ablation.items():
        p = np.mean(r["pass1"], 0)
        t = np.mean(r["tokens"], 0)
        lines.append(f"- {label}: " + ", ".join(f"step {st}: pass@1 {pp:.3f}, {tt:.1f} tokens" for st, pp, tt in zip(r["steps"], p, t)))
    if figures["ablation.png"]:
        lines += ["", "![ablation over training](ablation.png)"]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out_dir / "summary.json").write_text(json.dumps({
        "ks": s.ks, "base": s.base, "curves": s.curves, "samples_to_match": {k: {"mean_curves": v["mean_curves"], "per_seed": {str(a): b for a, b in v["per_seed"].items()}} for k, v in s.match.items()},
        "alpha": {str(a): r for a, r in s.alpha.items()}, "ablation": s.ablation, "verdicts": s.verdicts, "missing": s.missing,
    }, indent=1, default=float))
    return path


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
