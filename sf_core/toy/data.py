"""The toy world as training data for `sf_core.train` (no files: every sample is rendered on demand).

`ToyWorldDataset` has the interface of `sf_core.train.data.ShardDataset` that the trainer and the ODE-pair
generator use (`len`, `[i] -> Sample`, `negative`, `text_dim`, `index`, `root`, `kind`), so the one
trainer runs on it unchanged: sample i is the world video drawn from the key (seed, i), encoded into the
toy latent space, with its prompt's embeddings. A fixed fraction of samples (chosen by the same key) has
its prompt dropped -- empty prompt, all-zero embedding -- so the teacher also learns the unconditional
score that classifier-free guidance needs. Another fraction (`motion_dropout`, an independent draw) keeps only
the object's words ("a red square"): the teacher then also learns the motion-free score that *motion guidance*
contrasts the full prompt with (`sf_core.toy.guidance`). Every sample carries that object prompt's embedding
as its partial prompt (`Sample.partial`), for the trainer's partial guidance (`dmd.partial_guidance`,
`supervised.ode_partial_guidance`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..train.data import Sample, trim_embedding  # the trainer's record type and embedding trim
from ..train.rng import keyed_generator as keyed  # the trainer's keyed draws
from . import codec
from .guidance import object_prompt
from .text import ToyTextEncoder
from .world import WorldSpec, render, sample_scene


class ToyWorldDataset:
    """A virtual dataset of `size` world videos for seed `seed`.

    latents=False gives prompts only (distribution matching and ODE pairs need no videos).
    """

    def __init__(self, seed: int = 0, *, size: int = 1 << 16, frames: int = 12, spec: WorldSpec | None = None,
                 encoder: ToyTextEncoder | None = None, prompt_dropout: float = 0.0, motion_dropout: float = 0.0,
                 latents: bool = True):
        if size < 1 or frames < 1:
            raise ValueError(f"size and frames must be positive, got {size}, {frames}")
        if not 0.0 <= prompt_dropout < 1.0:
            raise ValueError(f"prompt_dropout must be in [0, 1), got {prompt_dropout}")
        if not 0.0 <= motion_dropout < 1.0:
            raise ValueError(f"motion_dropout must be in [0, 1), got {motion_dropout}")
        self.seed, self.size, self.frames = int(seed), int(size), int(frames)
        self.spec = spec or WorldSpec()
        self.encoder = encoder or ToyTextEncoder()
        self.prompt_dropout = float(prompt_dropout)
        self.motion_dropout = float(motion_dropout)
        self.with_latents = latents
        self.kind = "latents" if latents else "prompts"
        self.root = Path(f"toy-world-seed{self.seed}")
        self.index = {"format": "toy_world", "kind": self.kind, "num_samples": self.size,
                      "text_dim": self.encoder.text_dim, "negative_prompt": self.encoder.negative_prompt,
                      "encoder": f"toy:{self.encoder.text_dim}"}
        self.negative = trim_embedding(self.encoder.encode([self.encoder.negative_prompt])[0])

    def __len__(self) -> int:
        return self.size

    @property
    def text_dim(self) -> int:
        return self.encoder.text_dim

    def scene(self, i: int):
        return sample_scene(keyed(self.seed, "toy-world", int(i)), self.spec)

    def _dropped(self, i: int) -> bool:
        return bool(self.prompt_dropout) and \
            float(torch.rand(1, generator=keyed(self.seed, "drop", int(i)))) < self.prompt_dropout

    def _motion_dropped(self, i: int) -> bool:
        return bool(self.motion_dropout) and \
            float(torch.rand(1, generator=keyed(self.seed, "motion-drop", int(i)))) < self.motion_dropout

    def _prompt(self, i: int, scene) -> str:
        if self._dropped(i):
            return ""
        return scene.object_prompt if self._motion_dropped(i) else scene.prompt

    def prompt(self, i: int) -> str:
        return self._prompt(i, self.scene(i))

    def __getitem__(self, i: int):
        if not 0 <= i < self.size:
            raise IndexError(i)
        scene = self.scene(i)
        prompt = self._prompt(i, scene)
        embeds = trim_embedding(self.encoder.encode([prompt])[0])
        lat = None
        if self.with_latents:
            lat = codec.encode(render(scene, self.frames, self.spec)[None])[0]
        partial = trim_embedding(self.encoder.encode([object_prompt(prompt)])[0])
        return Sample(int(i), prompt, embeds, lat, partial=partial)
