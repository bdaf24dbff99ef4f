"""Benchmark (not a test): image-to-video and video extension on the toy world, against its ground truth.

    .venv/bin/python bench/bench_toy_context.py                         # the shipped toy student
    .venv/bin/python bench/bench_toy_context.py --weights runs/toy/seed0/sf.safetensors --scenes 48

Image to video: a start frame rendered by the world (random scene), committed as the first frame
(`sf_core.sampling.context_frames`), then 8 chunks generated under the scene's own prompt. Reported: the centre
error of generated frames 1-3 against the image's object moving as prompted (the world's trajectory from the
image), mean / median / share of videos <= 1 px; whether shape and colour are kept (frames 1-6); prompted motion.
Extension: a 24-frame world video, its last frames committed, 8 chunks generated under the prompt of the motion at
the join (`scene_at`); the error of the first generated frame against where the world would be, and of its step
against the world's step (velocity), next to the velocity error of the following generated frames; and the step
from the last given frame to the first generated one against the model's own steps at chunk boundaries and inside.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="toy transformer weights (default: the shipped student)")
    ap.add_argument("--scenes", type=int, default=24, help="image-to-video scenes (extension: 2/3 of them)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)

    from sf_core.sampling.context_frames import commit_frames, frames_settings, usable_frames
    from sf_core.sampling.pipeline import as_bundle, generate
    from sf_core.sampling.session import new_session
    from sf_core.toy import load_toy_bundle
    from sf_core.toy.codec import ToyDecoder, encode
    from sf_core.toy.metrics import detect, score_video
    from sf_core.toy.world import WorldSpec, render, sample_scene, scene_at, scene_trajectory, shape_centroid_offset

    b = as_bundle(load_toy_bundle(args.weights))
    spec = WorldSpec()
    st = frames_settings(b.settings)

    def centres(video, shape):
        det = detect(video, spec)
        return det["centre"] - torch.tensor(shape_centroid_offset(shape, spec.size)), det

    g = torch.Generator().manual_seed(7)
    errs, kept, motion = [], [], []
    for i in range(args.scenes):
        sc = sample_scene(g, spec)
        s = new_session(b.transformer, b.text_encoder.encode([sc.prompt]), latent_hw=b.latent_hw, seed=i,
                        settings=st)
        frames = [commit_frames(b.transformer, s, encode(render(sc, 1, spec)[None]), decoder=ToyDecoder())]
        generate(b.transformer, s, num_chunks=8, decoder=ToyDecoder(), on_chunk=lambda r: frames.append(r.frames))
        video = torch.cat(frames, dim=2)[0]
        c, det = centres(video, sc.shape)
        gt = scene_trajectory(sc, video.shape[1], spec)
        errs.append(float(torch.nan_to_num((c[1:4] - gt[1:4]).norm(dim=1), nan=4.0).mean()))
        kept.append(all(col == sc.colour and shp == sc.shape for col, shp in zip(det["colour"][1:7],
                                                                                det["shape"][1:7])))
        motion.append(float(score_video(video, sc.prompt, spec)["prompt_motion"][0]))
    i2v = {"scenes": args.scenes, "centre_err_px_frames_1_3": {
        "mean": round(statistics.mean(errs), 3), "median": round(statistics.median(errs), 3),
        "share_le_1px": round(sum(e <= 1 for e in errs) / len(errs), 3)},
        "shape_and_colour_kept_frames_1_6": round(sum(kept) / len(kept), 3),
        "prompted_motion": round(statistics.mean(motion), 3)}

    g = torch.Generator().manual_seed(3)
    k = usable_frames(st.causal, 24)
    joins, bounds, inner, join_err, join_verr, later_verr = [], [], [], [], [], []
    for i in range(max(1, (2 * args.scenes) // 3)):
        sc = sample_scene(g, spec)
        world = render(sc, 48, spec)[None]  # frames 24-47: how the world goes on, the reference
        # the prompt names the motion at the join (after the bounces of the first 24 frames): what the
        # continuation is asked to follow; the scene's own prompt names its first frame's motion
        prompt = scene_at(sc, 24, spec).prompt
        s = new_session(b.transformer, b.text_encoder.encode([prompt]), latent_hw=b.latent_hw, seed=i,
                        settings=st)
        commit_frames(b.transformer, s, encode(world[:, :, 24 - k:24]), decoder=ToyDecoder(), emit=False)
        new = []
        generate(b.transformer, s, num_chunks=8, decoder=ToyDecoder(), on_chunk=lambda r: new.append(r.frames))
        c, _ = centres(torch.cat([world[:, :, :24]] + new, dim=2)[0], sc.shape)
        gt = scene_trajectory(sc, 48, spec)
        step = torch.nan_to_num((c[1:] - c[:-1]).norm(dim=1), nan=4.0)
        joins.append(float(step[23]))  # frame 23 (given) -> 24 (generated)
        bounds += [float(step[j]) for j in range(26, 47, 3)]  # generated chunks start at 27, 30, ...
        inner += [float(step[j]) for j in range(24, 47) if (j - 26) % 3]
        join_err.append(float(torch.nan_to_num((c[24] - gt[24]).norm(), nan=4.0)))
        # velocity error: each generated frame's step against the world's step there (frames 24-29)
        verr = torch.nan_to_num(((c[24:30] - c[23:29]) - (gt[24:30] - gt[23:29])).norm(dim=1), nan=4.0).tolist()
        join_verr.append(verr[0])
        later_verr += verr[1:]
    med = lambda xs: round(statistics.median(xs), 3)  # noqa: E731
    ext = {"videos": len(joins), "prompt": "the motion at the join (scene_at(scene, 24).prompt)",
           "join_step_px": {"median": med(joins), "mean": round(statistics.mean(joins), 3)},
           "chunk_boundary_step_px_median": med(bounds), "inside_chunk_step_px_median": med(inner),
           "join_position_err_px_median": med(join_err),
           "join_velocity_err_px_median": med(join_verr),
           "later_velocity_err_px_median_frames_25_29": med(later_verr)}
    print(json.dumps({"weights": args.weights or "shipped", "image_to_video": i2v, "extend": ext}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
