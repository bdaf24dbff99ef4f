"""Benchmark (not a test): decoding overlapped with sampling (`generate(..., overlap_decode=True)`) vs sequential.

    .venv/bin/python bench/bench_overlap.py                      # 1 torch thread (a core left for the decoder)
    .venv/bin/python bench/bench_overlap.py --threads 2

A small random transformer (dim 256, 4 layers) at a 32x32 latent (256x256 pixels) and TAEHV with random weights
(full size: its real cost), a 21-frame video (7 chunks), both orders alternating for `--rounds` rounds. Reports
the median wall time per video of each order, their ratio, the decoder's share of the sequential time, and
whether the frames are identical.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--hw", type=int, default=32, help="latent height = width")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(args.threads)
    from sf_core.config import CausalConfig, WanConfig
    from sf_core.model.transformer import WanTransformer, randomize_weights
    from sf_core.sampling.pipeline import generate
    from sf_core.sampling.session import SamplingSettings, new_session
    from sf_core.vae.taehv import TAEHV

    cfg = WanConfig(**{**WanConfig.tiny().to_dict(), **dict(dim=256, ffn_dim=1024, num_heads=2, num_layers=4,
                                                            text_dim=64, text_len=32)})
    model = randomize_weights(WanTransformer(cfg), seed=0).eval()
    g = torch.Generator().manual_seed(0)
    dec = TAEHV().eval()
    dec.load_state_dict({k: torch.randn(v.shape, generator=g) * 0.05 for k, v in dec.state_dict().items()})
    ctx = torch.randn(1, 16, cfg.text_dim, generator=g)
    st = SamplingSettings(causal=CausalConfig(chunk_frames=3))

    def once(overlap: bool):
        s = new_session(model, ctx, latent_hw=(args.hw, args.hw), seed=0, settings=st)
        frames, dec_s = [], [0.0]
        real = dec.decode_chunk

        def timed(z, state=None):
            t = time.perf_counter()
            out = real(z, state)
            dec_s[0] += time.perf_counter() - t
            return out
        dec.decode_chunk = timed
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                generate(model, s, num_frames=21, decoder=dec, overlap_decode=overlap, keep_latents=False,
                         on_chunk=lambda r: frames.append(r.frames))
        finally:
            del dec.decode_chunk
        return time.perf_counter() - t0, dec_s[0], torch.cat(frames, 2)

    once(False), once(True)  # warm-up
    walls = {False: [], True: []}
    share, same = [], True
    for r in range(args.rounds):
        got = {}
        for ov in ((False, True) if r % 2 == 0 else (True, False)):
            wall, ds, fr = once(ov)
            walls[ov].append(wall)
            got[ov] = fr
            if not ov:
                share.append(ds / wall)
        same &= bool(torch.equal(got[False], got[True]))
    seq, ovl = statistics.median(walls[False]), statistics.median(walls[True])
    print(json.dumps({"threads": args.threads, "latent_hw": args.hw, "rounds": args.rounds,
                      "sequential_s": round(seq, 3), "overlapped_s": round(ovl, 3), "ratio": round(ovl / seq, 3),
                      "decoder_share_sequential": round(statistics.median(share), 3), "frames_identical": same}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
