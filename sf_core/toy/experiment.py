"""The toy experiment over seeds: every stage for every seed, evaluated at 1x, 4x and 16x, mean and spread.

    python -m sf_core.toy experiment --seeds 0 1 2                       # the full experiment (hours of CPU)
    python -m sf_core.toy experiment --seeds 0 --scale 0.1 --videos 24   # a reduced run (labelled as such)

Resumable at any point: a stage that has its weights is not trained again (an interrupted one resumes from
its checkpoint, `recipes.train_stage`), and each (seed, stage) evaluation is saved to
`<root>/seed<S>/eval/<stage>.json` with the size and mtime of the weights it measured, so a rerun evaluates
only what is new. `--scale` multiplies every stage's steps (and the number of ODE pairs); the scale is recorded
in `<root>/experiment.json` and a root never mixes scales. The summary (`--out`: .json, .md and, with
matplotlib, .png and _windows.png) holds, per stage and window, the mean, the sample standard deviation and the seeds it covers.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import evaluate as ev
from . import recipes

log = logging.getLogger(__name__)

EXPERIMENT_STAGES = ("teacher", "tf", "df", "ode", "sf", "tf_dmd", "df_dmd", "sf_long", "cd", "cd_dmd")
LABELS = {"teacher": "teacher (bidirectional, 24 steps)", "tf": "Teacher Forcing", "df": "Diffusion Forcing",
          "ode": "ODE init", "sf": "Self Forcing (DMD)", "tf_dmd": "TF + DMD", "df_dmd": "DF + DMD",
          "sf_long": "SF + long rollout (4x)", "cd": "CD init", "cd_dmd": "CD init + DMD"}
WINDOWS = (("x1", "1x (frames 0-11)"), ("x4_tail", "4x, last 12 of 48 frames (36-47)"),
           ("x16_tail", "16x, last 12 of 192 frames (180-191)"))
FRAMES = ev.LONGEST * ev.TRAIN_FRAMES  # 192: one rollout gives all three windows


@dataclass
class Plan:
    seeds: list[int]
    stages: list[str] = field(default_factory=lambda: list(EXPERIMENT_STAGES))
    scale: float = 1.0
    root: str = str(recipes.DEFAULT_ROOT)
    videos: int | None = None  # None = all 144 prompts
    eval_seed: int = 0
    recipe: dict | None = None  # `recipes.Recipe` fields asked for (the root's record decides)

    def steps(self, stage: str, recipe: recipes.Recipe) -> int | None:
        """The stage's steps at this scale (None = the recipe's own)."""
        if self.scale == 1.0:
            return None
        return max(1, round(recipes.stage_steps(stage, recipe) * self.scale))

    @property
    def ode_prompts(self) -> int:
        return max(16, round(recipes.ODE_PROMPTS * self.scale))


def check_root(plan: Plan) -> recipes.Recipe:
    """Record the plan's scale in <root>/experiment.json (refusing a root that was trained at another scale) and
    return the root's recipe."""
    recipe = recipes.root_recipe(plan.root, plan.recipe)
    path = Path(plan.root) / "experiment.json"
    rec = {"scale": plan.scale, "ode_prompts": plan.ode_prompts,
           "steps": {s: plan.steps(s, recipe) or recipes.stage_steps(s, recipe) for s in EXPERIMENT_STAGES}}
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("scale") != plan.scale:
            raise ValueError(f"{plan.root} holds an experiment at scale {old.get('scale')}, not {plan.scale}: use "
                             f"another --root (e.g. runs/toy_scale{plan.scale}) or the same --scale")
        return recipe
    from ..fileio import atomic_write_text

    atomic_write_text(path, json.dumps(rec, indent=1))
    return recipe


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def eval_path(plan: Plan, seed: int, stage: str) -> Path:
    return Path(plan.root) / f"seed{seed}" / "eval" / f"{stage}.json"


def evaluate_stage(plan: Plan, seed: int, stage: str, recipe: recipes.Recipe = recipes.LEGACY) -> dict:
    """The stage's metrics (cached beside its weights; recomputed when the weights changed)."""
    from .bundle import load_toy_transformer

    weights = recipes.stage_weights(plan.root, seed, stage)
    out = eval_path(plan, seed, stage)
    if out.is_file():
        rec = json.loads(out.read_text(encoding="utf-8"))
        if rec.get("weights") == _stamp(weights) and rec.get("videos") == plan.videos:
            return rec["result"]
    model = load_toy_transformer(weights)
    t0 = time.perf_counter()
    if stage == "teacher":
        result = ev.evaluate_teacher(model, plan.videos, plan.eval_seed, spec=recipe.world,
                                     motion_guidance=recipe.motion_guidance)
    else:
        result = ev.evaluate_student(model, plan.videos, frames=FRAMES, seed=plan.eval_seed, spec=recipe.world)
    log.info("evaluated seed %d %s in %.0f s", seed, stage, time.perf_counter() - t0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"weights": _stamp(weights), "videos": plan.videos, "result": result}),
                   encoding="utf-8")
    tmp.replace(out)
    return result


def run(plan: Plan, *, train: bool = True, evaluate: bool = True) -> dict[int, dict[str, dict]]:
    """Train (or resume) and evaluate every (seed, stage) of the plan; returns {seed: {stage: result}}."""
    recipe = check_root(plan)
    results: dict[int, dict[str, dict]] = {}
    for seed in plan.seeds:
        results[seed] = {}
        for stage in plan.stages:
            weights = recipes.stage_weights(plan.root, seed, stage)
            if train and not weights.is_file():
                t0 = time.perf_counter()
                recipes.train_stage(stage, seed, plan.root, steps=plan.steps(stage, recipe),
                                    ode_prompts=plan.ode_prompts)
                log.info("trained seed %d %s in %.1f min", seed, stage, (time.perf_counter() - t0) / 60)
            if evaluate and weights.is_file():
                results[seed][stage] = evaluate_stage(plan, seed, stage, recipe)
    return results


def aggregate(results: dict[int, dict[str, dict]]) -> dict[str, dict]:
    """{stage: {window: {metric: {"mean", "std", "n", "values"}}, "per_frame": {metric: [mean per frame]}}}."""
    out: dict[str, dict] = {}
    stages = [s for s in EXPERIMENT_STAGES if any(s in r for r in results.values())]
    for stage in stages:
        runs = [r[stage] for r in results.values() if stage in r]
        agg: dict[str, dict] = {"seeds": len(runs)}
        for window, _ in (*WINDOWS, ("x4", ""), ("x16", "")):
            have = [r[window] for r in runs if window in r]
            if have:
                agg[window] = {k: _stats([h[k] for h in have]) for k in have[0]}
        curves = [r["per_frame"] for r in runs]
        agg["per_frame"] = {k: [_mean([c[k][i] for c in curves]) for i in range(min(len(c[k]) for c in curves))]
                            for k in curves[0]}
        out[stage] = agg
    return out


def _rounded(x, digits: int = 5):
    """Floats rounded for the summary file (the per-(seed, stage) evaluations keep full precision)."""
    if isinstance(x, float):
        return x if math.isnan(x) else round(x, digits)
    if isinstance(x, dict):
        return {k: _rounded(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v, digits) for v in x]
    return x


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def _stats(xs: list[float]) -> dict:
    m = _mean(xs)
    good = [x for x in xs if x is not None and not math.isnan(x)]
    sd = math.sqrt(sum((x - m) ** 2 for x in good) / (len(good) - 1)) if len(good) > 1 else float("nan")
    return {"mean": m, "std": sd, "n": len(good), "values": xs}


def table(agg: dict[str, dict], window: str) -> str:
    """Markdown: mean ± sample std over seeds (just the mean when one seed ran)."""
    head = "| model | seeds | " + " | ".join(r[1] for r in ev.ROWS) + " |"
    lines = [head, "|" + "---|" * (len(ev.ROWS) + 2)]
    for stage, a in agg.items():
        if window not in a:
            continue
        cells = []
        for key, _, fmt in ev.ROWS:
            st = a[window].get(key)
            if st is None:
                cells.append("–")
            elif st["n"] > 1:
                cells.append(f"{ev._fmt(st['mean'], fmt)} ± {ev._fmt(st['std'], fmt)}")
            else:
                cells.append(ev._fmt(st["mean"], fmt))
        lines.append(f"| {LABELS[stage]} | {a['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


WINDOW_METRICS = ("prompt_motion", "shape_acc", "pos_err", "motion_err")


def plot_windows(agg: dict[str, dict], path: str | Path, metrics=WINDOW_METRICS) -> Path:
    """Bars of the mean over seeds per stage and window (1x, 4x tail, 16x tail), the sample std as error bars
    and each seed's value as a dot: what the tables say, with their spread."""
    ev.check_plotting()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {k: lbl for k, lbl, _ in ev.ROWS}
    stages = [s for s in agg if any(w in agg[s] for w, _ in WINDOWS)]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(8.0, 1.1 * len(stages) + 2), 2.6 * len(metrics)),
                             sharex=True, squeeze=False)
    axes = axes[:, 0]
    width = 0.8 / len(WINDOWS)
    for ax, m in zip(axes, metrics):
        for j, (window, title) in enumerate(WINDOWS):
            xs, means, errs = [], [], []
            for i, stage in enumerate(stages):
                st = agg[stage].get(window, {}).get(m)
                if st is None:
                    continue
                x = i + (j - (len(WINDOWS) - 1) / 2) * width
                xs.append(x)
                means.append(st["mean"])
                errs.append(0.0 if st["n"] < 2 else st["std"])
                vals = [v for v in st["values"] if v is not None and not math.isnan(v)]
                ax.plot([x] * len(vals), vals, "k.", ms=3, zorder=3)
            ax.bar(xs, means, width, yerr=errs, capsize=2, label=title.split(",")[0], color=f"C{j}", alpha=0.8)
        ax.set_ylabel(names.get(m, m))
        ax.grid(axis="y", alpha=0.3)
    seeds = sorted({a["seeds"] for a in agg.values()})
    axes[0].set_title(f"Mean over seeds ({'/'.join(map(str, seeds))} per model), sample std, one dot per seed",
                      pad=24)
    axes[0].legend(fontsize=8, ncol=len(WINDOWS), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    axes[-1].set_xticks(range(len(stages)))
    axes[-1].set_xticklabels([LABELS[s] for s in stages], rotation=25, ha="right", fontsize=8)
    return ev.save_figure(fig, path)


def report(plan: Plan, agg: dict[str, dict], out: str | Path, plot: bool = True) -> dict[str, Path]:
    """Write <out>.json (plan + aggregate), <out>.md (one table per window) and, with matplotlib, <out>.png
    (per-frame curves) and <out>_windows.png (`plot_windows`)."""
    out = Path(out)
    if out.suffix in (".json", ".md", ".png"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    note = "" if plan.scale == 1.0 else (f"**Reduced run: every stage at {plan.scale:g}x its steps "
                                         f"({plan.ode_prompts} ODE pairs); not the experiment's figures.**\n\n")
    prompts = "all 144 prompts" if plan.videos is None else f"{plan.videos} of the 144 prompts"
    r, _ = recipes.read_recipe(plan.root)
    recipe = (f"Recipe ({plan.root}/recipe.json): teacher {r.teacher_steps} steps, motion dropout "
              f"{r.motion_dropout:g}, image mix {r.image_mix:g}, motion guidance {r.motion_guidance:g} (DMD's real "
              f"score, the ODE pairs and the teacher's reference samples){', clock world' if r.clock else ''}.")
    md = [f"Seeds {plan.seeds}, {prompts}, eval noise seed {plan.eval_seed}. {recipe}\n\n{note}".rstrip() + "\n"]
    for window, title in WINDOWS:
        md.append(f"**{title}**\n\n{table(agg, window)}\n")
    paths = {"json": Path(f"{out}.json"), "md": Path(f"{out}.md")}  # (a stem may hold dots: toy_scale0.1)
    paths["json"].write_text(json.dumps({"plan": asdict(plan), "recipe": asdict(r), "results": _rounded(agg)},
                                        allow_nan=True), encoding="utf-8")
    paths["md"].write_text("\n".join(md), encoding="utf-8")
    if plot:
        curves = {LABELS[s]: {"per_frame": a["per_frame"]} for s, a in agg.items() if s != "teacher"}
        paths["png"] = ev.plot(curves, f"{out}.png")
        paths["windows_png"] = plot_windows(agg, f"{out}_windows.png")
    return paths


__all__ = ["Plan", "run", "aggregate", "table", "report", "plot_windows", "check_root", "EXPERIMENT_STAGES", "LABELS"]
