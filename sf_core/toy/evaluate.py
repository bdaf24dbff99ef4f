"""The exposure-bias experiment: roll the toy students out 1x and 4x their training length and measure them.

Protocol (fixed, so every run is comparable):
- prompts: all 144 prompts of the world, in `all_prompts()` order (or `videos` of them, evenly spread);
- students: the same code path as `python -m sf_core generate` (`sf_core.sampling.pipeline`): 4 steps at shift 5,
  chunks of 3, a rolling KV cache with a window of the training length (12 frames), 48 frames = 4x the
  training length (or 192 = 16x, `frames`); the first 12 frames are exactly a 1x (global cache) rollout, since
  nothing is evicted before frame 12, and the first 48 of a 192-frame rollout are the 4x one;
- the bidirectional teacher (a reference, 1x only: it cannot extend a video): Euler with CFG;
- noise from the session seed; metrics from `sf_core.toy.metrics` on the decoded 16x16 frames.
Results are {name: {"per_frame": {metric: [T]}, "x1": {...}, "x4_tail": {...}, "x4": {...}}}: 1x = frames
0-11, 4x tail = the last 12 frames of the first 48 (36-47), 4x = all of them; a 192-frame rollout adds
"x16_tail" (frames 180-191) and "x16".
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from . import codec
from .metrics import METRICS, per_frame, score_batch, summarize
from .spec import LATENT_HW, SHIFT, STEPS, TEACHER_CFG, TRAIN_FRAMES, WORLD, toy_causal
from .text import ToyTextEncoder
from .world import all_prompts

log = logging.getLogger(__name__)

LONG = 4  # long rollouts are LONG x the training length
LONGEST = 16  # and the longest ones (the experiment's third window)
TEACHER_STEPS = 24


def eval_prompts(videos: int | None = None) -> list[str]:
    """The 144 prompts, or `videos` of them spread evenly over the list (every shape, colour, motion)."""
    p = all_prompts()
    if videos is None or videos >= len(p):
        return p
    return [p[(i * len(p)) // videos] for i in range(videos)]


@torch.no_grad()
def student_rollout(model, prompts: list[str], frames: int, seed: int = 0, *, causal=None, steps=STEPS,
                    shift: float = SHIFT, batch: int = 48) -> torch.Tensor:
    """Latents [N, 12, frames, 8, 8] of a causal student through `sf_core.sampling.pipeline` (batches of `batch`)."""
    from ..sampling.pipeline import generate
    from ..sampling.session import SamplingSettings, new_session

    enc = ToyTextEncoder(text_dim=model.config.text_dim, text_len=model.config.text_len)
    settings = SamplingSettings(steps=tuple(steps), shift=shift, causal=causal or toy_causal())
    outs = []
    for a in range(0, len(prompts), batch):
        ctx = enc.encode(prompts[a:a + batch])
        session = new_session(model, ctx, latent_hw=LATENT_HW, batch=ctx.shape[0], seed=seed + a,
                              settings=settings)
        outs.append(generate(model, session, num_frames=frames))
    return torch.cat(outs)


@torch.no_grad()
def teacher_sample(model, prompts: list[str], frames: int = TRAIN_FRAMES, seed: int = 0, *,
                   steps: int = TEACHER_STEPS, guidance: float = TEACHER_CFG, motion_guidance: float = 0.0,
                   shift: float = SHIFT, batch: int = 48) -> torch.Tensor:
    """Latents [N, 12, frames, 8, 8] of the bidirectional teacher: Euler over `steps` points with CFG
    (`guidance`, against the empty prompt) and motion guidance (against the object prompt, `sf_core.toy.guidance`)."""
    from ..sampling.schedule import FlowSchedule
    from ..train.methods.ode import ode_trajectory
    from .guidance import Guidance, guided_denoiser

    how = Guidance(cfg=guidance, motion=motion_guidance)
    outs = []
    for a in range(0, len(prompts), batch):
        part = prompts[a:a + batch]
        den = guided_denoiser(model, FlowSchedule(shift), part, how)
        g = torch.Generator().manual_seed(seed + a)
        noise = torch.randn((len(part), model.config.in_dim, frames, *LATENT_HW), generator=g)
        outs.append(ode_trajectory(den, noise, steps, shift, (steps,))[:, 0])
    return torch.cat(outs)


def measure(latents: torch.Tensor, prompts: list[str], spec=WORLD) -> dict:
    """Per-frame curves and window summaries of decoded latents [N, 12, T, 8, 8] (`spec`: the world they were
    trained on; one with a clock leaves the walls out of the flicker)."""
    scores = score_batch(codec.decode(latents), prompts, spec)
    t = latents.shape[2]
    out = {"per_frame": per_frame(scores), "x1": summarize(scores, 0, min(t, TRAIN_FRAMES)),
           "videos": len(prompts), "frames": t}
    for k in (LONG, LONGEST):
        n = k * TRAIN_FRAMES
        if t >= n:
            out[f"x{k}_tail"] = summarize(scores, n - TRAIN_FRAMES, n)
            out[f"x{k}"] = summarize(scores, 0, n)
    return out


def evaluate_student(model, videos: int | None = None, frames: int = LONG * TRAIN_FRAMES, seed: int = 0,
                     spec=WORLD, **kw) -> dict:
    prompts = eval_prompts(videos)
    return measure(student_rollout(model, prompts, frames, seed, **kw), prompts, spec)


def evaluate_teacher(model, videos: int | None = None, seed: int = 0, spec=WORLD, **kw) -> dict:
    """kw: `teacher_sample` options (motion_guidance=w for a teacher trained with motion dropout)."""
    prompts = eval_prompts(videos)
    return measure(teacher_sample(model, prompts, TRAIN_FRAMES, seed, **kw), prompts, spec)


def ground_truth(videos: int | None = None, frames: int = LONG * TRAIN_FRAMES, seed: int = 0,
                 spec=WORLD) -> dict:
    """The metrics of real world videos of the eval prompts (the ceiling; start centres drawn from `seed`)."""
    from .world import Scene, render, sample_scene
    from .text import parse_prompt

    g = torch.Generator().manual_seed(seed)
    prompts = eval_prompts(videos)
    vids = []
    for p in prompts:
        s = sample_scene(g, spec)
        a = parse_prompt(p)
        vids.append(render(Scene(a["shape"], a["colour"], a["direction"], a["speed"], s.x, s.y, clock=s.clock),
                           frames, spec))
    return measure(codec.encode(torch.stack(vids)), prompts, spec)


RECORD_STRIDE, RECORD_FRAMES = 12, 24  # the shipped model's record: 12 spread prompts, 2x the training length


def record(model, seed: int = 0) -> dict:
    """A short, fast evaluation kept beside the shipped model; the tests re-run it and compare."""
    prompts = all_prompts()[::RECORD_STRIDE]
    lat = student_rollout(model, prompts, RECORD_FRAMES, seed)
    scores = score_batch(codec.decode(lat), prompts, WORLD)
    return {"prompts": prompts, "frames": RECORD_FRAMES, "seed": seed, "summary": summarize(scores),
            "latent_abs_mean": float(lat.abs().mean()), "latent_std": float(lat.std())}


# ------------------------------------------------------------------------------------------ reporting
ROWS = (("shape_acc", "shape acc", "{:.2f}"), ("colour_acc", "colour acc", "{:.2f}"),
        ("prompt_motion", "prompted motion", "{:.2f}"), ("moving", "moving", "{:.2f}"),
        ("pos_err", "drift (px)", "{:.2f}"), ("motion_err", "motion err (px/f)", "{:.3f}"),
        ("flicker", "flicker", "{:.4f}"), ("present", "present", "{:.2f}"))


def _fmt(v, f) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v)


def table(results: dict[str, dict], window: str = "x1") -> str:
    """A markdown table of one window ("x1", "x4_tail" or "x4") for every result that has it."""
    head = "| model | " + " | ".join(r[1] for r in ROWS) + " |"
    lines = [head, "|" + "---|" * (len(ROWS) + 1)]
    for name, res in results.items():
        if window not in res:
            continue
        s = res[window]
        lines.append(f"| {name} | " + " | ".join(_fmt(s.get(k), f) for k, _, f in ROWS) + " |")
    return "\n".join(lines)


def check_plotting() -> None:
    """Fail before any work if the plot cannot be drawn (matplotlib is in requirements-standalone.txt only)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ModuleNotFoundError("the per-frame plot needs matplotlib: pip install -r requirements-standalone.txt "
                                  "(or pip install matplotlib), or pass --plot '' to skip the plot") from None


def plot(results: dict[str, dict], path: str | Path, metrics=("pos_err", "shape_acc", "motion_err", "flicker")
         ) -> Path:
    """Per-frame curves of each result (matplotlib: requirements-standalone.txt; only this plot needs it)."""
    check_plotting()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = {k: lbl for k, lbl, _ in ROWS}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
    for ax, m in zip(axes, metrics):
        for name, res in results.items():
            y = res["per_frame"][m]
            ax.plot(range(len(y)), y, label=name, lw=1.6)
        ax.axvline(TRAIN_FRAMES - 0.5, color="0.6", ls="--", lw=1)
        ax.set_title(names.get(m, m))
        ax.set_xlabel("frame")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, allow_nan=True), encoding="utf-8")
    return path


__all__ = ["record", "evaluate_student", "evaluate_teacher", "ground_truth", "student_rollout", "teacher_sample",
           "measure", "table", "plot", "save_figure", "save", "METRICS"]
