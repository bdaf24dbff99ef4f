"""The toy world: a synthetic text-conditioned video world with known ground truth, a tiny Wan-structured model
trained on it by the project's own pipeline, and the embedded default model.

Modules: world (scenes, rendering, trajectories), text (deterministic text encoder), codec (the latent space
and its chunk decoder), metrics (ground-truth metrics per frame), spec (sizes and defaults), data (the world
as a training dataset), recipes (training stages through `sf_core.train`), evaluate (the exposure-bias
experiment), bundle (`load_toy_bundle`), cli (`python -m sf_core.toy`). Importing loads nothing heavy.
"""
from __future__ import annotations


def load_toy_bundle(*args, **kwargs):
    """The shipped toy model as a generation bundle (see `sf_core.toy.bundle.load_toy_bundle`)."""
    from .bundle import load_toy_bundle as _load

    return _load(*args, **kwargs)


__all__ = ["load_toy_bundle"]
