"""Run by tests/test_vae_comfy.py with ComfyUI's interpreter: compares sf_core.vae with ComfyUI's own Wan VAE.

    COMFYUI_DIR=/path/to/ComfyUI /path/to/comfy/python tests/_vae_comfy_check.py

Prints one JSON object of max |differences| (and facts) on stdout. The same random full-size (dim 96)
weights go into ComfyUI's `comfy.sd.VAE` (through a safetensors file written by `save_wan_vae`, as a
user's `wan_2.1_vae.safetensors` would) and into our `WanVAE`; inputs are 16x16-pixel videos.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, os.environ["COMFYUI_DIR"])
sys.argv = sys.argv[:1]  # ComfyUI's cli_args parse sys.argv on import

import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True  # before comfy.model_management is imported

import torch  # noqa: E402

import comfy.latent_formats  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.utils  # noqa: E402

from sf_core.vae import ComfyDecoderState, ComfyWanDecoder, WanVAE, load_wan_vae, normalize, save_wan_vae  # noqa: E402
from sf_core.vae.latent import WAN21_MEAN, WAN21_STD  # noqa: E402
from sf_core.vae.tiny import random_state_dict  # noqa: E402


def main() -> None:
    t0 = time.time()
    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanVAE().state_dict().items()}
    sd = random_state_dict(shapes, seed=11)
    ours = load_wan_vae(sd)
    res: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sf_test_wan_2.1_vae.safetensors")
        save_wan_vae(path, ours)
        comfy_sd = comfy.utils.load_torch_file(path)
        vae = comfy.sd.VAE(sd=comfy_sd)
    model = vae.first_stage_model
    res["comfy_class"] = f"{type(model).__module__}.{type(model).__name__}"
    res["vae_dtype"] = str(vae.vae_dtype)
    theirs = model.state_dict()
    res["keys_equal"] = set(theirs) == set(sd)
    res["shapes_equal"] = all(tuple(theirs[k].shape) == tuple(sd[k].shape) for k in sd if k in theirs)
    res["weights_equal"] = all(torch.equal(theirs[k].float(), sd[k]) for k in sd if k in theirs)

    fmt = comfy.latent_formats.Wan21()
    res["mean_diff"] = (fmt.latents_mean.flatten() - torch.tensor(WAN21_MEAN)).abs().max().item()
    res["std_diff"] = (fmt.latents_std.flatten() - torch.tensor(WAN21_STD)).abs().max().item()

    g = torch.Generator().manual_seed(3)
    z_raw = torch.randn(1, 16, 3, 2, 2, generator=g)  # 16x16 pixels: enough for every layer, fast on CPU
    z_long = torch.randn(1, 16, 8, 2, 2, generator=g)  # even and > 2 chunks: the host's own pairs end odd
    with torch.inference_mode():
        comfy_full = vae.decode(z_raw)  # [B, T, H, W, 3] in [0, 1]
        ours_full = ours.decode_raw(z_raw)  # [B, 3, T, H, W] in [-1, 1]
        ours_01 = ((ours_full + 1) / 2).permute(0, 2, 3, 4, 1)
        res["decode_shape"] = [list(comfy_full.shape), list(ours_01.shape)]
        res["decode_diff"] = (comfy_full - ours_01).abs().max().item()
        res["decode_scale"] = comfy_full.std().item()

        # ComfyUI's VAE streamed frame-wise then 2 frames, the state saved and restored in between
        dec = ComfyWanDecoder(vae)
        z = normalize(z_raw)
        first, state = dec.decode_chunk(z[:, :, :1])
        state = ComfyDecoderState.from_tensors(state.to_tensors())
        rest, state = dec.decode_chunk(z[:, :, 1:], state)
        streamed = torch.cat([first, rest], dim=2)
        res["stream_frames"] = [first.shape[2], rest.shape[2]]
        res["stream_vs_vae_decode"] = ((streamed + 1) / 2 - comfy_full.permute(0, 4, 1, 2, 3)).abs().max().item()
        res["stream_vs_ours"] = (streamed - ours_full).abs().max().item()

        # longer streams in chunkings other than the host's own (frame 0, then pairs): every one == VAE.decode
        long_full = vae.decode(z_long).permute(0, 4, 1, 2, 3) * 2 - 1
        res["long_scale"] = long_full.std().item()
        res["long_frames"] = long_full.shape[2]
        res["long_vs_ours"] = (long_full - ours.decode_raw(z_long)).abs().max().item()
        diffs = {}
        for sizes in ((3, 3, 2), (1,) * 8, (1, 2, 2, 2, 1), (2, 3, 3), (8,)):
            state, pieces, at = None, [], 0
            for n in sizes:
                out, state = dec.decode_chunk(normalize(z_long[:, :, at:at + n]), state)
                state = ComfyDecoderState.from_tensors(state.to_tensors())  # as a saved session would
                pieces.append(out)
                at += n
            diffs["+".join(map(str, sizes))] = (torch.cat(pieces, dim=2) - long_full).abs().max().item()
        res["long_stream_vs_vae_decode"] = diffs

        video = torch.rand(1, 3, 5, 16, 16, generator=g) * 2 - 1
        comfy_mu = vae.encode(((video + 1) / 2)[0].permute(1, 2, 3, 0))  # IMAGE [T, H, W, 3] in [0, 1]
        ours_mu = ours.encode_raw(video)
        res["encode_shape"] = [list(comfy_mu.shape), list(ours_mu.shape)]
        res["encode_diff"] = (comfy_mu - ours_mu).abs().max().item()
        res["encode_scale"] = ours_mu.std().item()
        # image to video: the node's encode through ComfyUI's VAE vs our encoder, committed into a session
        res.update(_image_path(vae, ours, g))
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res))


def _image_path(vae, ours, g) -> dict:
    import importlib.util

    # the pack's `nodes` package, under another name (ComfyUI has a `nodes` module of its own)
    spec = importlib.util.spec_from_file_location("sf_pack_nodes", ROOT / "nodes" / "__init__.py",
                                                  submodule_search_locations=[str(ROOT / "nodes")])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["sf_pack_nodes"] = pack
    spec.loader.exec_module(pack)
    from sf_pack_nodes.context import encode_frames, rgb_frames
    from sf_core.config import WanConfig
    from sf_core.sampling.context_frames import commit_frames, frames_settings
    from sf_core.model.transformer import WanTransformer, randomize_weights
    from sf_core.sampling.session import SamplingSettings, new_session

    rgba = torch.rand(1, 16, 16, 4, generator=g)  # an RGBA image: the alpha is dropped
    z_comfy = encode_frames(rgb_frames(rgba), vae=vae)
    z_ours = ours.encode(rgba[..., :3].permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1)
    model = randomize_weights(WanTransformer(WanConfig.tiny()), seed=0).eval()
    caches = []
    for z in (z_comfy, z_ours):
        s = new_session(model, torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(1)), latent_hw=(2, 2),
                        settings=frames_settings(SamplingSettings()))
        commit_frames(model, s, z)
        caches.append([t for i in range(s.cache.num_layers) for t in s.cache.valid(i)])
    return {"i2v_latent_shape": list(z_comfy.shape), "i2v_latent_diff": (z_comfy - z_ours).abs().max().item(),
            "i2v_cache_diff": max((a - b).abs().max().item() for a, b in zip(*caches)),
            "i2v_cache_scale": caches[0][0].std().item()}


if __name__ == "__main__":
    main()
