"""Guidance of the toy teacher by parts of its prompt: classifier-free guidance and *motion guidance*.

A diffusion model's x0 estimate x0(c) for the prompt c can be pushed along the difference to another prompt's
estimate: x0 = x0(c) + w (x0(c) - x0(c')). With c' the empty prompt this is classifier-free guidance (CFG);
with c' the prompt without its motion words ("a red square" for "a red square moving left fast") it amplifies
only what the motion words change -- where the object goes -- and leaves what both prompts share (shape,
colour) alone. That is motion guidance. It needs a model that also learnt the motion-free score: train the
teacher with `motion_dropout` (`sf_core.toy.data.ToyWorldDataset`, `python -m sf_core.toy train teacher
--motion-dropout 0.15`). The sampler's `Denoiser` computes it (`partial` / `partial_guidance`), and the trainer
uses the same term wherever the teacher teaches (`dmd.partial_guidance`, `supervised.ode_partial_guidance`).

Why the toy needs it: a probe of the bidirectional teacher's denoising loss (`bench/bench_toy_teacher.py
--probe`) shows that swapping the prompt's direction word changes the loss far less than swapping its colour or
speed: the direction is learnt last and weakest, so a sampler picks the direction nearly at random unless the
small difference the word makes is amplified (docs/toy_world.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..sampling.denoiser import Denoiser
from ..sampling.schedule import FlowSchedule
from .text import ToyTextEncoder, parse_prompt


def object_prompt(prompt: str) -> str:
    """The prompt reduced to the object's words ("a red square moving left fast" -> "a red square"); words the
    world does not know are dropped; a prompt without shape or colour keeps what it has."""
    p = parse_prompt(prompt)
    return " ".join(w for w in (p["colour"], p["shape"]) if w)


@dataclass(frozen=True)
class Guidance:
    """Weights of the guidance terms: cfg against the empty prompt, motion against the object prompt."""

    cfg: float = 0.0
    motion: float = 0.0

    def __post_init__(self) -> None:
        for name, w in (("cfg", self.cfg), ("motion", self.motion)):
            if not (w == w and abs(w) != float("inf")) or w < 0:
                raise ValueError(f"guidance {name}={w} must be a finite number >= 0 (0 = off)")


def guided_denoiser(model, schedule: FlowSchedule, prompts: list[str], guidance: Guidance,
                    encoder: ToyTextEncoder | None = None) -> Denoiser:
    """The prompts' denoiser with both guidance terms (`sf_core.sampling.denoiser.Denoiser`: CFG against the
    empty prompt, the partial-prompt term against the object prompts; one extra forward per nonzero weight)."""
    enc = encoder or ToyTextEncoder(text_dim=model.config.text_dim, text_len=model.config.text_len)
    return Denoiser(model, schedule, enc.encode(prompts), negative=enc.encode([""] * len(prompts)),
                    guidance=guidance.cfg, partial=enc.encode([object_prompt(p) for p in prompts]),
                    partial_guidance=guidance.motion)
