"""The papers' headline effects, measured on a designed experiment (`jobs/reproduce.py`).

Up to three studies share one set of trials, all at equal compute (the same steps, prompts and
samples per step; only the objective, alpha and seed differ). A run chooses its studies:

- **objectives**: GRPO and MaxRL (and RLOO if listed) at alpha = 0, several seeds. MaxRL's claim:
  its pass@k keeps rising with k where GRPO's flattens, so GRPO needs several times more samples
  to reach the same coverage (`samples_to_match`, docs/algorithms.md section 8).
- **alpha**: the length penalty with RLOO (Arora & Zanette's estimator) for alpha in a grid:
  alpha = 0.2 should cut mean tokens by >= 30% for <= 2 points of pass@1.
- **ablation**: the same penalty with the advantage divided by the group's reward std (GRPO)
  against RLOO, both at alpha = 0.2: the length push no longer scales with alpha and accuracy
  should fall further.

Everything here works on the sweep's evaluated points (the MLflow logger's record: one dict per
trial and evaluation step with `eval/*` metrics and the trial's sampled params), so a report can
be rebuilt from any finished or interrupted run. The per-step training metrics of each arm
(`read_train_logs`, from MLflow) are the evidence of why a claim did not show.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from paretorl.algos import samples_to_match

OBJ, ALPHA, SEED = "algo.objective", "algo.alpha", "train.seed"
STUDIES = ("objectives", "alpha", "ablation")


@dataclass(frozen=True)
class Design:
    objectives: tuple[str, ...] = ("grpo", "maxrl", "rloo")  # the objective levels
    alphas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.4)  # the alpha levels
    seeds: tuple[int, ...] = (0, 1, 2)
    studies: tuple[str, ...] = STUDIES  # the studies this run makes, from these levels
    alpha_objective: str = "rloo"  # the length-penalty paper's estimator
    ablation_objective: str = "grpo"  # divides the advantage by the group's reward std
    ablation_alpha: float = 0.2

    def __post_init__(self):
        if len(self.seeds) < 1 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")
        unknown = [s for s in self.studies if s not in STUDIES]
        if unknown or not self.studies or len(set(self.studies)) != len(self.studies):
            raise ValueError(f"studies must be distinct names among {', '.join(STUDIES)}, got {', '.join(self.studies) or 'none'}")
        for study in self.studies:
            problem = self._problem(study)
            if problem:
                raise ValueError(f"the {study} study: {problem}; add the level, or run only the studies these levels allow (--studies)")

    def _problem(self, study: str) -> str | None:
        """Why the levels cannot make `study`, or None."""
        if study == "objectives":
            if 0.0 not in self.alphas:
                return f"alphas must include 0.0 (the objectives are compared at alpha 0), got {list(self.alphas)}"
            missing = [o for o in ("grpo", "maxrl") if o not in self.objectives]
            if missing:
                return f"objectives must include {missing[0]!r} (the headline comparison), got {list(self.objectives)}"
        if study == "alpha":
            if 0.0 not in self.alphas:
                return f"alphas must include 0.0 (the reference of the alpha study), got {list(self.alphas)}"
            if self.ablation_alpha not in self.alphas:
                return f"ablation_alpha {self.ablation_alpha:g} must be one of alphas {list(self.alphas)} (the alpha study's claim is made there)"
        for objective, alpha in self.study_arms(study):  # every arm a study runs is among the levels
            if objective not in self.objectives or alpha not in self.alphas:
                return f"needs {objective} at alpha {alpha:g}, but the levels are objectives {list(self.objectives)}, alphas {list(self.alphas)}"
        return None

    def study_arms(self, study: str) -> list[tuple[str, float]]:
        """(objective, alpha) of every arm of one study, per seed."""
        if study == "objectives":
            return [(o, 0.0) for o in self.objectives]
        if study == "alpha":
            return [(self.alpha_objective, float(a)) for a in self.alphas]
        return [(self.alpha_objective, self.ablation_alpha), (self.ablation_objective, self.ablation_alpha)]

    @classmethod
    def from_arms(cls, arms: list[dict]) -> Design:
        """The design of an all-studies run from its arms (records written before runs chose studies)."""
        seeds = tuple(dict.fromkeys(int(a[SEED]) for a in arms))
        objectives = tuple(dict.fromkeys(a[OBJ] for a in arms if float(a[ALPHA]) == 0.0))
        alphas = tuple(sorted({float(a[ALPHA]) for a in arms if a[OBJ] == cls.alpha_objective}))
        return cls(objectives=objectives, alphas=alphas, seeds=seeds)

    @classmethod
    def from_record(cls, record: dict) -> Design:
        """The design a run's record (sweep.json) keeps; older records keep only their arms."""
        if "design" not in record:
            return cls.from_arms(record["arms"])
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["design"].items()})

    def as_record(self) -> dict:
        return asdict(self)

    def arms(self) -> list[dict]:
        """Every distinct trial, seed by seed, so a cut-short run holds whole studies for its first seeds."""
        out: list[dict] = []
        for seed in self.seeds:
            for study in (s for s in STUDIES if s in self.studies):
                for objective, alpha in self.study_arms(study):
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
    training: dict[str, dict] = field(default_factory=dict)  # label -> per-step training metrics (training_summary)


def summarize(points: list[dict], design: Design, base: dict, final_step: int, train_logs: dict | None = None) -> Summary:
    """Each study's results from the evaluated points; a study the design does not run stays empty."""
    arms = by_arm(points)
    finals = {k: v[-1] for k, v in arms.items() if v and v[-1]["step"] == final_step}
    missing = [f"{arm_label(o, a)} seed {s}" for o, a, s in (tuple(arm.values()) for arm in design.arms()) if (o, a, s) not in finals]
    ks = sorted(curve_of(base)) or sorted({k for p in finals.values() for k in curve_of(p)})

    curves: dict[str, dict] = {}
    for objective in design.objectives if "objectives" in design.studies else ():
        seeds = [s for s in design.seeds if (objective, 0.0, s) in finals]
        if not seeds:
            continue
        values = np.array([[curve_of(finals[(objective, 0.0, s)]).get(k, np.nan) for k in ks] for s in seeds])
        mean, lo, hi = mean_band(values)
        curves[objective] = {"seeds": seeds, "values": values.tolist(), "mean": mean.tolist(), "lo": lo.tolist(), "hi": hi.tolist()}

    alpha = {}
    for a in design.alphas if "alpha" in design.studies else ():
        rows = [finals[(design.alpha_objective, a, s)] for s in design.seeds if (design.alpha_objective, a, s) in finals]
        if rows:
            alpha[a] = {
                "seeds": [int(r[SEED]) for r in rows],
                "tokens": [r["eval/mean_tokens"] for r in rows],
                "pass1": [r["eval/pass_at_1"] for r in rows],
                "tokens_correct": [r.get("eval/mean_tokens_correct", math.nan) for r in rows],
            }
    ablation = {}
    context = [(design.alpha_objective, 0.0)] if "alpha" in design.studies else []  # RLOO at alpha 0, when the alpha study ran it
    for objective, a in [*context, *design.study_arms("ablation")] if "ablation" in design.studies else ():
        runs = [arms[(objective, a, s)] for s in design.seeds if (objective, a, s) in finals]
        if runs:
            steps = [p["step"] for p in runs[0]]
            runs = [r for r in runs if [p["step"] for p in r] == steps]
            ablation[arm_label(objective, a)] = {
                "steps": [0, *steps],
                "pass1": [[base["eval/pass_at_1"], *(p["eval/pass_at_1"] for p in r)] for r in runs],
                "tokens": [[base["eval/mean_tokens"], *(p["eval/mean_tokens"] for p in r)] for r in runs],
            }
    summary = Summary(design, base, ks, curves, _match(curves, ks), alpha, ablation, [], missing, training_summary(train_logs or {}, design))
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


# --- the training logs: what the update saw, step by step -------------------------------------
TRAIN_KEYS = (
    "train/correct_frac", "train/zero_adv_groups_frac", "train/all_correct_groups_frac", "train/mean_tokens",
    "train/rows_computed_frac", "train/step_seconds", "train/update_seconds", "rollout/seconds",
)
ALL_WRONG = "train/all_wrong_groups_frac"  # derived at alpha 0: there a group has zero advantage iff all wrong or all correct


def read_train_logs(tracking_uri: str, run_ids, keys=TRAIN_KEYS) -> dict[tuple[str, float, int], dict[str, list[tuple[int, float]]]]:
    """Per-step training metrics of each trial's MLflow run, keyed by its arm (objective, alpha, seed)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    out = {}
    for run_id in run_ids:
        params = client.get_run(run_id).data.params
        if not {OBJ, ALPHA, SEED} <= set(params):
            continue
        arm = (params[OBJ], float(params[ALPHA]), int(params[SEED]))
        out[arm] = {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}
    return out


def training_summary(logs: dict, design: Design) -> dict[str, dict]:
    """Per arm of the design: each metric's mean over seeds, per step and over the first and last quarter of steps."""
    out: dict[str, dict] = {}
    for objective, a in dict.fromkeys((o, a) for s in design.studies for o, a in design.study_arms(s)):
        runs = {s: dict(logs[(objective, a, s)]) for s in design.seeds if (objective, a, s) in logs}
        if a == 0.0:
            for r in runs.values():
                r[ALL_WRONG] = _difference(r.get("train/zero_adv_groups_frac", []), r.get("train/all_correct_groups_frac", []))
        metrics = {}
        for key in (*TRAIN_KEYS, ALL_WRONG):
            by_step: dict[int, list[float]] = {}
            for r in runs.values():
                for step, v in r.get(key, []):
                    by_step.setdefault(step, []).append(v)
            if not by_step:
                continue
            steps = sorted(by_step)
            mean = [float(np.mean(by_step[s])) for s in steps]
            q = max(1, len(steps) // 4)
            metrics[key] = {"steps": steps, "mean": mean, "first": float(np.mean(mean[:q])), "last": float(np.mean(mean[-q:])), "all": float(np.mean(mean))}
        if metrics:
            out[arm_label(objective, a)] = {"seeds": sorted(runs), "metrics": metrics}
    return out


def _difference(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> list[tuple[int, float]]:
    other = dict(b)
    return [(step, v - other[step]) for step, v in a if step in other]


# --- the verdicts -----------------------------------------------------------------------------
def verdicts(s: Summary) -> list[dict]:
    """The issue's three bars, each shown / not shown / not measured, with the numbers behind it;
    a bar not shown carries the training logs' evidence of why."""
    return [_coverage_verdict(s), _alpha_verdict(s), _ablation_verdict(s)]


def _not_run(s: Summary, study: str) -> str | None:
    if study in s.design.studies:
        return None
    return f"study not run (this run's studies: {', '.join(s.design.studies)})"


def _coverage_verdict(s: Summary) -> dict:
    k_max = s.ks[-1] if s.ks else "k_max"
    claim = f"MaxRL's pass@{k_max} above GRPO's, samples-to-match >= 2 on the seed-mean curves and >= 1.5 in every seed, over >= 3 seeds"
    skipped = _not_run(s, "objectives")
    if skipped or not ("maxrl" in s.curves and "grpo" in s.curves):
        return {"claim": claim, "shown": None, "evidence": skipped or "a final evaluation of MaxRL or GRPO at alpha 0 is missing"}
    m, g = s.curves["maxrl"]["mean"][-1], s.curves["grpo"]["mean"][-1]
    ratio, per_seed = s.match["maxrl"]["mean_curves"], s.match["maxrl"]["per_seed"]
    seeds = len(per_seed)
    shown = bool(m > g and ratio >= 2 and seeds >= 3 and min(per_seed.values()) >= 1.5)
    per = ", ".join(f"seed {k}: {ratio_text(v)}" for k, v in per_seed.items())
    evidence = f"pass@{k_max} MaxRL {m:.3f} vs GRPO {g:.3f}; samples to match (mean curves) {ratio_text(ratio)} ({per}); {seeds} seeds"
    if not shown:
        evidence += (
            ". Training logs (first -> last quarter of steps, mean over seeds; a group all wrong or all correct has zero advantage, "
            "so it carries none of MaxRL's extra weight on hard prompts): "
            + _training_evidence(s, [arm_label("maxrl", 0.0), arm_label("grpo", 0.0)], (("train/correct_frac", "pass rate"), (ALL_WRONG, "all-wrong groups"), ("train/all_correct_groups_frac", "all-correct groups")))
        )
    return {"claim": claim, "shown": shown, "evidence": evidence}


def _alpha_verdict(s: Summary) -> dict:
    a = s.design.ablation_alpha
    claim = f"alpha = {a:g} cuts mean tokens >= 30% against alpha = 0 with pass@1 within 2 points ({s.design.alpha_objective})"
    skipped = _not_run(s, "alpha")
    if skipped or not (0.0 in s.alpha and a in s.alpha):
        return {"claim": claim, "shown": None, "evidence": skipped or f"alpha = 0 or alpha = {a:g} has no final evaluation"}
    t0, t1 = np.mean(s.alpha[0.0]["tokens"]), np.mean(s.alpha[a]["tokens"])
    p0, p1 = np.mean(s.alpha[0.0]["pass1"]), np.mean(s.alpha[a]["pass1"])
    cut = 1 - t1 / t0
    return {
        "claim": claim,
        "shown": bool(cut >= 0.30 and p0 - p1 <= 0.02),
        "evidence": f"tokens {t0:.1f} -> {t1:.1f} ({-100 * cut:+.0f}%); pass@1 {p0:.3f} -> {p1:.3f} ({100 * (p1 - p0):+.1f} points)",
    }


def _ablation_verdict(s: Summary) -> dict:
    (ref_o, a), (abl_o, _) = s.design.study_arms("ablation")
    abl, ref = arm_label(abl_o, a), arm_label(ref_o, a)
    claim = f"dividing by the group std ({abl}) loses more accuracy than {ref} (Welch t-test over seeds, p < 0.05)"
    skipped = _not_run(s, "ablation")
    if skipped or not (abl in s.ablation and ref in s.ablation):
        return {"claim": claim, "shown": None, "evidence": skipped or "an ablation arm has no final evaluation"}
    base = s.base["eval/pass_at_1"]
    final_abl = [r[-1] for r in s.ablation[abl]["pass1"]]
    final_ref = [r[-1] for r in s.ablation[ref]["pass1"]]
    lost_abl, lost_ref = base - np.mean(final_abl), base - np.mean(final_ref)
    tokens_abl, tokens_ref = (np.mean([r[-1] for r in s.ablation[x]["tokens"]]) for x in (abl, ref))
    p = welch_p(final_ref, final_abl)
    shown = bool(lost_abl > lost_ref and p < 0.05)
    evidence = (
        f"pass@1 change from the base policy ({base:.3f}): {abl} {-100 * lost_abl:+.1f} points, {ref} {-100 * lost_ref:+.1f} points; "
        f"difference {100 * (lost_abl - lost_ref):.1f} points, p = {p:.2g} over {len(final_abl)} and {len(final_ref)} seeds; "
        f"final mean tokens {abl} {tokens_abl:.1f}, {ref} {tokens_ref:.1f} (base {s.base['eval/mean_tokens']:.1f})"
    )
    if not shown:
        evidence += (
            ". Training logs (first -> last quarter of steps, mean over seeds; the std divides out alpha only in groups whose "
            "responses are all correct): "
            + _training_evidence(s, [abl, ref], (("train/correct_frac", "pass rate"), ("train/all_correct_groups_frac", "all-correct groups"), ("train/mean_tokens", "tokens")))
        )
    return {"claim": claim, "shown": shown, "evidence": evidence}


def _training_evidence(s: Summary, labels: list[str], keys: tuple[tuple[str, str], ...]) -> str:
    parts = []
    for label in labels:
        metrics = s.training.get(label, {}).get("metrics", {})
        items = [f"{name} {_fmt(key, metrics[key]['first'])} -> {_fmt(key, metrics[key]['last'])}" for key, name in keys if key in metrics]
        if items:
            parts.append(f"{label}: " + ", ".join(items))
    return "; ".join(parts) if parts else "not available (no MLflow training metrics for these arms)"


def _fmt(key: str, value: float) -> str:
    return f"{value:.1f}" if key.endswith("tokens") else f"{100 * value:.0f}%"


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


def ratio_text(r: float) -> str:
    return "not reached (< 1x)" if r == 0 else f"{r:.2f}x"
