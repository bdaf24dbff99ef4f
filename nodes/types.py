"""The pack's private socket types (ComfyUI `io.Custom`), shared by every node file.

- SF_SESSION: a generation that can be continued (KV cache, positions, RNG, decoder state), on the CPU
  between nodes so the host's output cache never pins GPU memory and continuing never mutates an input.
- SF_PROMPT_SCHEDULE: prompt entries (start chunk, conditioning, transition) built by chained nodes.
- SF_DECODER: a chunk decoder that is not a stock VAE (TAEHV preview decoder, the toy model's codec).
"""
from __future__ import annotations

from comfy_api.latest import io

Session = io.Custom("SF_SESSION")
PromptSchedule = io.Custom("SF_PROMPT_SCHEDULE")
Decoder = io.Custom("SF_DECODER")

CATEGORY = "Self Forcing"
