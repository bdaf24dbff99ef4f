"""Reader for reference fixtures: tensors recorded from the official Self Forcing code.

Format (documented with the fixture): one safetensors file, flat keys, JSON metadata under `meta_json`.
Latents are stored [B, F, C, H, W] and noise draws [B*F, C, H, W]; this module converts them to our
[B, C, F, H, W] layout. Every size is read from the metadata.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..config import CausalConfig, WanConfig
from ..model.transformer import WanTransformer


class FixtureError(ValueError):
    pass


@dataclass
class Fixture:
    path: Path
    meta: dict
    tensors: dict[str, torch.Tensor]

    @classmethod
    def load(cls, path: str | Path) -> "Fixture":
        path = Path(path)
        if not path.is_file():
            raise FixtureError(f"fixture {path} does not exist")
        try:
            with safe_open(str(path), "pt") as f:
                md = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except SafetensorError as exc:
            raise FixtureError(f"{path} is not a readable safetensors file ({exc})") from exc
        if "meta_json" not in md:
            raise FixtureError(f"{path} has no 'meta_json' metadata: not a Self Forcing reference fixture")
        return cls(path, json.loads(md["meta_json"]), tensors)

    # -- model ---------------------------------------------------------------------------------
    @property
    def config(self) -> WanConfig:
        return WanConfig.from_dict(self.meta["tiny_config"])

    def model(self, prefix: str = "weights", dtype: torch.dtype = torch.float32) -> WanTransformer:
        """The generator (`weights`) or a score net (`real_weights`, `fake_weights`)."""
        m = WanTransformer(self.config)
        sd = {k[len(prefix) + 1:]: v for k, v in self.tensors.items() if k.startswith(prefix + "/")}
        m.load_state_dict(sd, strict=True)
        return m.to(dtype)

    @property
    def tokens_per_frame(self) -> int:
        return int(self.meta["frame_seq_length"])

    @property
    def timesteps(self) -> torch.Tensor:
        return torch.tensor(self.meta["denoising_step_list"], dtype=torch.float32)

    def context(self, negative: bool = False) -> torch.Tensor:
        return self.tensors["inputs/negative_prompt_embeds" if negative else "inputs/prompt_embeds"]

    # -- tensors in our layout -----------------------------------------------------------------
    def latent(self, key: str) -> torch.Tensor:
        """A [B, F, C, H, W] tensor as [B, C, F, H, W]."""
        return self.tensors[key].permute(0, 2, 1, 3, 4)

    def draw(self, key: str, frames: int) -> torch.Tensor:
        """A recorded noise draw [B*frames, C, H, W] as [B, C, frames, H, W]."""
        z = self.tensors[key]
        return z.view(-1, frames, *z.shape[1:]).permute(0, 2, 1, 3, 4)

    def runs(self) -> list[dict]:
        """The KV-cache inference runs: the global one (`infer`) and every rolling run."""
        inf = self.meta["infer"]
        out = [dict(prefix="infer", calls=self.meta["infer_calls"], draws=self.meta["infer_noise_draws"],
                    num_frames=inf["num_frames"], nf=inf["num_frame_per_block"],
                    window=None if inf.get("local_attn_size", -1) == -1 else inf["local_attn_size"],
                    sink=inf.get("sink_size", 0), rows=inf["kv_cache_rows"])]
        for r in self.meta.get("rolling_runs", []):
            p = r["prefix"]
            out.append(dict(prefix=p, calls=self.meta[f"{p}_calls"], draws=self.meta[f"{p}_noise_draws"],
                            num_frames=r["num_frames"], nf=r["num_frame_per_block"],
                            window=r["local_attn_size"], sink=r["sink_size"], rows=r["kv_cache_rows"],
                            sink_honoured=r.get("sink_honoured", True)))
        return out

    def causal(self, run: dict) -> CausalConfig:
        """CausalConfig of a run (unvalidated window for runs where the reference overwrote the sink)."""
        if run["window"] is not None and run["window"] < run["nf"] + run["sink"]:
            return CausalConfig(chunk_frames=run["nf"])  # the cache itself is built with strict=False
        return CausalConfig(chunk_frames=run["nf"], window_frames=run["window"], sink_frames=run["sink"])
