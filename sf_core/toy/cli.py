"""`python -m sf_core.toy {train, eval, ship}`: reproduce the toy model and the exposure-bias experiment.

    python -m sf_core.toy train teacher --seed 0     # bidirectional teacher (flow matching)
    python -m sf_core.toy train tf --seed 0          # teacher forcing student
    python -m sf_core.toy train df --seed 0          # diffusion forcing student
    python -m sf_core.toy train sf --seed 0          # ODE init + Self Forcing (DMD)
    python -m sf_core.toy train tf_dmd --seed 0      # the paper's few-step baselines: TF + DMD, DF + DMD
    python -m sf_core.toy train all --seed 0         # all of the above, in order
    python -m sf_core.toy eval --seed 0              # table (markdown) + per-frame plot + results JSON
    python -m sf_core.toy ship --seed 0              # copy the sf student into sf_core/toy/assets + record

Generation with the shipped model is the project's CLI: python -m sf_core generate --model toy --prompt ...
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


from . import recipes

log = logging.getLogger("sf_core.toy")


def cmd_train(args) -> int:
    stages = [s for s in recipes.STAGES] if args.stage == "all" else [args.stage]
    for stage in stages:
        t0 = time.perf_counter()
        path = recipes.train_stage(stage, args.seed, args.root, steps=args.steps)
        print(json.dumps({"stage": stage, "seed": args.seed, "weights": str(path),
                          "minutes": round((time.perf_counter() - t0) / 60, 1)}))
    return 0


def cmd_eval(args) -> int:
    from . import evaluate as ev
    from .bundle import load_toy_transformer

    if args.plot:
        ev.check_plotting()  # before minutes of rollouts, not after
    results: dict[str, dict] = {"ground truth": ev.ground_truth(args.videos, seed=args.eval_seed)}
    for stage in ("teacher", "tf", "df", "ode", "tf_dmd", "df_dmd", "sf"):
        path = recipes.stage_weights(args.root, args.seed, stage)
        if not path.is_file():
            log.info("no %s (%s): skipped", stage, path)
            continue
        model = load_toy_transformer(path)
        t0 = time.perf_counter()
        if stage == "teacher":
            results["teacher (bidirectional, 24 steps)"] = ev.evaluate_teacher(model, args.videos, args.eval_seed)
        else:
            results[LABELS[stage]] = ev.evaluate_student(model, args.videos, seed=args.eval_seed)
        log.info("evaluated %s in %.0f s", stage, time.perf_counter() - t0)
    out = Path(args.out)
    ev.save({"seed": args.seed, "eval_seed": args.eval_seed, "results": results}, out)
    text = (f"1x (frames 0-11)\n\n{ev.table(results, 'x1')}\n\n"
            f"4x, last 12 frames (36-47)\n\n{ev.table(results, 'x4_tail')}\n")
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    if args.plot:
        curves = {k: v for k, v in results.items() if "x4" in v}
        print(json.dumps({"plot": str(ev.plot(curves, args.plot)), "results": str(out)}))
    return 0


LABELS = {"tf": "Teacher Forcing", "df": "Diffusion Forcing", "ode": "ODE init", "tf_dmd": "TF + DMD",
          "df_dmd": "DF + DMD", "sf": "Self Forcing (DMD)"}


def cmd_ship(args) -> int:
    from . import evaluate as ev
    from .bundle import DEFAULT_MODEL, RECORD, load_toy_transformer

    src = Path(args.weights) if args.weights else recipes.stage_weights(args.root, args.seed, "sf")
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist; train it first: python -m sf_core.toy train sf --seed "
                                f"{args.seed}")
    from ..checkpoints import load_checkpoint, save_model

    ck = load_checkpoint(src)
    DEFAULT_MODEL.parent.mkdir(parents=True, exist_ok=True)
    save_model(DEFAULT_MODEL, ck.state_dict, ck.config, causal=ck.causal, dtype=args.dtype,
               extra_meta={"toy": {"seed": args.seed, "source": src.name}})
    DEFAULT_MODEL.chmod(0o644)  # a file of the package, readable by everyone
    rec = ev.record(load_toy_transformer(DEFAULT_MODEL))
    RECORD.write_text(json.dumps(rec, indent=1), encoding="utf-8")
    print(json.dumps({"model": str(DEFAULT_MODEL), "bytes": DEFAULT_MODEL.stat().st_size, "record": rec["summary"]}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sf_core.toy", description="the toy world and its models")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--seed", type=int, default=0, help="training seed (world samples, noise, init)")
        p.add_argument("--root", default=str(recipes.DEFAULT_ROOT), help="runs directory (default runs/toy)")

    p = sub.add_parser("train", help="train one stage (or all) from scratch; resumes an interrupted stage")
    p.add_argument("stage", choices=(*recipes.STAGES, "all"))
    common(p)
    p.add_argument("--steps", type=int, help="override the stage's number of steps (quick tries)")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="evaluate every trained stage of a seed: 1x and 4x rollouts")
    common(p)
    p.add_argument("--videos", type=int, help="N of the 144 eval prompts, evenly spread (default: all)")
    p.add_argument("--eval-seed", type=int, default=0, help="noise seed of the rollouts")
    p.add_argument("--out", default="docs/toy_world_results.json", help="results JSON (+ .md table beside it)")
    p.add_argument("--plot", default="docs/toy_world_rollouts.png", help="per-frame plot PNG ('' = none)")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("ship", help="make a trained sf student the embedded default model")
    common(p)
    p.add_argument("--weights", help="weights to ship (default: <root>/seed<S>/sf.safetensors)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.set_defaults(fn=cmd_ship)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
