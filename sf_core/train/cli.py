"""`python -m sf_core.train {run, encode-prompts, export, ode-pairs, init-config, status}`.

    python -m sf_core.train init-config --preset tiny --out cfg.json
    python -m sf_core.train encode-prompts --prompts prompts.txt --out data/emb --encoder toy
    torchrun --nproc_per_node 8 --nnodes 2 --node_rank $R --master_addr $HOST --master_port 29500 \\
        -m sf_core.train run --config cfg.json --set optim.lr=2e-6
    python -m sf_core.train export --checkpoint runs/x/checkpoints/step_0000600 --out sf.safetensors
    python -m sf_core.train status --run runs/x

Errors in the inputs (missing files, bad config, too few prompts, unreadable checkpoints) print one line
`error: ...` and exit with code 2 without touching anything already saved.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch

from ..checkpoints.files import CheckpointError
from ..config import ConfigError
from .config import TrainConfig, parse_set_args

log = logging.getLogger("sf_core.train")

PRESETS = ("tiny", "dmd", "dmd_long", "sid", "ode", "teacher_forcing", "diffusion_forcing", "flow_matching", "cd")


def _setup_logging() -> int:
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    return rank


def _load_config(args) -> TrainConfig:
    overrides = parse_set_args(args.set)
    for key, attr in (("out_dir", "out_dir"), ("max_steps", "max_steps"), ("checkpoint.resume", "resume")):
        if getattr(args, attr, None) is not None:
            overrides[key] = str(getattr(args, attr))
    if args.config:
        return TrainConfig.load(args.config, overrides)
    from .config import apply_overrides
    return apply_overrides(TrainConfig.tiny(), overrides) if overrides else TrainConfig.tiny()


def cmd_run(args) -> int:
    cfg = _load_config(args)
    from .distributed import barrier, init_distributed, shutdown
    from .models import check_paths
    from .trainer import Trainer

    check_paths(cfg)
    info = init_distributed(cfg.dist)
    try:
        torch.manual_seed(cfg.seed + info.rank)  # per-rank seed for anything outside the keyed draws
        status = Trainer(cfg, info).run()
        if info.is_main:
            print(json.dumps({"state": status.get("state"), "step": status.get("step"),
                              "checkpoint": status.get("checkpoint"), "export": status.get("export"),
                              "plot": status.get("plot")}))
        # leave together: a rank that tears gloo down while rank 0 still exports can abort at exit ("terminate
        # called without an active exception"); only on success, so a failing rank still exits at once
        barrier(info)
    finally:
        shutdown()
    return 0


def cmd_encode(args) -> int:
    from .data import encode_prompts, read_prompt_file
    from .encoders import resolve_encoder

    prompts, partials = read_prompt_file(args.prompts)
    encode, default_negative = resolve_encoder(args.encoder)
    negative = default_negative if args.negative is None else args.negative
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    out = encode_prompts(prompts, encode, args.out, negative_prompt=negative, batch_size=args.batch_size,
                         shard_size=args.shard_size, encoder_name=args.encoder, dtype=dtype,
                         progress=lambda n, total: log.info("encoded %d/%d prompts", n, total), partials=partials)
    print(json.dumps({"out": str(out), "prompts": len(prompts), "partial": partials is not None}))
    return 0


def cmd_export(args) -> int:
    from . import checkpoint as ckpt
    from .export import export_checkpoint

    target = args.checkpoint
    if target is None:
        if args.run is None:
            raise ConfigError("give --checkpoint DIR or --run OUT_DIR (its latest checkpoint)")
        target = ckpt.latest(args.run)
        if target is None:
            raise ConfigError(f"{args.run} has no complete checkpoint under {ckpt.checkpoint_root(args.run)}")
    out = export_checkpoint(target, args.out, weights=args.weights, dtype=args.dtype)
    print(json.dumps({"export": str(out)}))
    return 0


def cmd_ode_pairs(args) -> int:
    cfg = _load_config(args)
    from .data import ShardDataset
    from .distributed import init_distributed, shutdown
    from .methods.ode import generate_ode_pairs
    from .models import check_paths, load_net

    if cfg.data.embeddings is None:
        raise ConfigError("ode-pairs encodes the prompts of data.embeddings: set it (encode-prompts first)")
    check_paths(cfg)
    prompts = ShardDataset(cfg.data.embeddings)
    info = init_distributed(cfg.dist)
    try:
        teacher = load_net(cfg.models.teacher, "teacher", cfg, seed=cfg.models.init_seed + 1).to(info.device)
        teacher.requires_grad_(False)
        out = generate_ode_pairs(cfg, teacher, prompts, args.out, info,
                                 progress=lambda n, t: log.info("ODE pairs %d/%d", n, t))
        if info.is_main:
            print(json.dumps({"out": str(out), "prompts": len(prompts)}))
    finally:
        shutdown()
    return 0


def cmd_status(args) -> int:
    from . import checkpoint as ckpt
    from .progress import read_status

    if not Path(args.run).is_dir():
        raise ConfigError(f"--run {args.run}: no such run folder")
    st = read_status(args.run)
    st["latest_checkpoint"] = str(ckpt.latest(args.run) or "") or None
    print(json.dumps(st, indent=1))
    return 0


def cmd_init_config(args) -> int:
    if args.preset == "tiny":
        cfg = TrainConfig.tiny()
    else:
        base = TrainConfig.tiny().to_dict() if args.tiny else {}
        d = {**base, "method": "dmd" if args.preset == "dmd_long" else args.preset}
        if args.preset == "dmd_long":  # Self-Forcing++ / LongLive: DMD on windows of 4x longer rollouts
            d["long_rollout"] = {"factor": 4}
        if args.preset in ("ode", "teacher_forcing", "diffusion_forcing", "flow_matching", "cd"):
            d["data"] = {**d.get("data", {}), "latents": "data/latents"}
        else:
            d["data"] = {**d.get("data", {}), "embeddings": "data/embeddings"}
        cfg = TrainConfig.from_dict(d)
    text = cfg.to_json() + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sf_core.train", description="Self Forcing training")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def config_args(p):
        p.add_argument("--config", help="run config (.json or .toml); default: the tiny preset")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value "
                       "(dotted key, JSON value), e.g. --set optim.lr=1e-5; repeatable")

    p = sub.add_parser("run", help="train (launch with torchrun for several processes / nodes)")
    config_args(p)
    p.add_argument("--out-dir", help="run directory (checkpoints, metrics, export); overrides out_dir")
    p.add_argument("--max-steps", type=int, help="overrides max_steps")
    p.add_argument("--resume", help="auto (latest checkpoint of out_dir), none, or a checkpoint directory")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("encode-prompts", help="precompute text embeddings of a prompts file into shards")
    p.add_argument("--prompts", required=True, help=".txt (one prompt per line) or .jsonl file (objects with a "
                   "'prompt' field; a 'partial' field on every line adds partial prompts for dmd.partial_guidance)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--encoder", default="toy", help="toy | toy:TEXT_DIM | umt5:PATH | package.module:factory")
    p.add_argument("--negative", help="negative (unconditional) prompt; default: the encoder's")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=1024, help="prompts per shard file")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="storage dtype (bfloat16 halves the size of umT5 embeddings)")
    p.set_defaults(fn=cmd_encode)

    p = sub.add_parser("export", help="write the (EMA) generator of a checkpoint as one safetensors file")
    p.add_argument("--checkpoint", help="checkpoint directory (…/checkpoints/step_NNNNNNN)")
    p.add_argument("--run", help="run directory: export its latest checkpoint")
    p.add_argument("--out", help="output .safetensors (default: export/ in the run folder of the checkpoint)")
    p.add_argument("--weights", default="auto", choices=("auto", "ema", "generator"))
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), help="default: the run's export_dtype")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("ode-pairs", help="generate teacher ODE pairs for the ode method")
    config_args(p)
    p.add_argument("--out", required=True, help="output directory (then set data.latents to it)")
    p.set_defaults(fn=cmd_ode_pairs)

    p = sub.add_parser("status", help="print a run's status.json (a trainer that died is shown as interrupted)")
    p.add_argument("--run", required=True, help="run folder (out_dir)")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("init-config", help="write a starting config")
    p.add_argument("--preset", default="dmd", choices=PRESETS)
    p.add_argument("--tiny", action="store_true", help="with the tiny sizes (random tiny nets, CPU-friendly)")
    p.add_argument("--out", help="file to write (default: stdout)")
    p.set_defaults(fn=cmd_init_config)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = _setup_logging()
    try:
        return args.fn(args)
    except (ConfigError, CheckpointError) as exc:  # bad inputs (data, checkpoints too): one clear line
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
