"""`python -m sf_core.toy {train, eval, ship}`: reproduce the toy model and the exposure-bias experiment.

    python -m sf_core.toy train teacher --seed 0     # bidirectional teacher (flow matching)
    python -m sf_core.toy train tf --seed 0          # teacher forcing student
    python -m sf_core.toy train df --seed 0          # diffusion forcing student
    python -m sf_core.toy train sf --seed 0          # ODE init + Self Forcing (DMD)
    python -m sf_core.toy train tf_dmd --seed 0      # the paper's few-step baselines: TF + DMD, DF + DMD
    python -m sf_core.toy train sf_long --seed 0     # Self Forcing on windows of 4x longer rollouts
    python -m sf_core.toy train cd_dmd --seed 0      # causal consistency distillation init (from tf) + DMD
    python -m sf_core.toy train all --seed 0         # all of the above, in order
    python -m sf_core.toy eval --seed 0              # table (markdown) + per-frame plot + results JSON
    python -m sf_core.toy experiment --seeds 0 1 2   # every stage x seeds, 1x / 4x / 16x, mean and spread
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
    from ..train.config_io import parse_set_args

    stages = [s for s in recipes.STAGES] if args.stage == "all" else [args.stage]
    for stage in stages:
        t0 = time.perf_counter()
        path = recipes.train_stage(stage, args.seed, args.root, steps=args.steps,
                                   overrides=parse_set_args(args.set) if args.set else None,
                                   recipe=asked_recipe(args))
        print(json.dumps({"stage": stage, "seed": args.seed, "weights": str(path),
                          "minutes": round((time.perf_counter() - t0) / 60, 1)}))
    return 0


def cmd_eval(args) -> int:
    from . import evaluate as ev
    from .bundle import load_toy_transformer
    from .experiment import EXPERIMENT_STAGES, LABELS, WINDOWS

    if args.plot:
        ev.check_plotting()  # before minutes of rollouts, not after
    frames = args.factor * ev.TRAIN_FRAMES
    rec, _ = recipes.read_recipe(args.root)
    results: dict[str, dict] = {"ground truth": ev.ground_truth(args.videos, frames=frames, seed=args.eval_seed,
                                                                spec=rec.world)}
    for stage in EXPERIMENT_STAGES:
        path = recipes.stage_weights(args.root, args.seed, stage)
        if not path.is_file():
            log.info("no %s (%s): skipped", stage, path)
            continue
        model = load_toy_transformer(path)
        t0 = time.perf_counter()
        if stage == "teacher":
            results[LABELS[stage]] = ev.evaluate_teacher(model, args.videos, args.eval_seed, spec=rec.world,
                                                         motion_guidance=rec.motion_guidance)
        else:
            results[LABELS[stage]] = ev.evaluate_student(model, args.videos, frames=frames, seed=args.eval_seed,
                                                         spec=rec.world)
        log.info("evaluated %s in %.0f s", stage, time.perf_counter() - t0)
    out = Path(args.out)
    ev.save({"seed": args.seed, "eval_seed": args.eval_seed, "results": results}, out)
    text = "\n".join(f"{title}\n\n{ev.table(results, window)}\n" for window, title in WINDOWS
                     if any(window in r for r in results.values()))
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    if args.plot:
        curves = {k: v for k, v in results.items() if "x4" in v}
        print(json.dumps({"plot": str(ev.plot(curves, args.plot)), "results": str(out)}))
    return 0


def cmd_experiment(args) -> int:
    from . import experiment as ex

    if args.plot:
        from . import evaluate as ev

        ev.check_plotting()
    root = args.root or (str(recipes.DEFAULT_ROOT) if args.scale == 1.0 else f"runs/toy_scale{args.scale:g}")
    plan = ex.Plan(seeds=args.seeds, stages=args.stages or list(ex.EXPERIMENT_STAGES), scale=args.scale, root=root,
                   videos=args.videos, eval_seed=args.eval_seed, recipe=asked_recipe(args))
    results = ex.run(plan, train=not args.eval_only, evaluate=not args.train_only)
    if args.train_only:
        return 0
    paths = ex.report(plan, ex.aggregate(results), args.out, plot=bool(args.plot))
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def cmd_ship(args) -> int:
    from . import evaluate as ev
    from .bundle import DEFAULT_MODEL, RECORD, load_toy_transformer

    src = Path(args.weights) if args.weights else recipes.stage_weights(args.root, args.seed, "sf")
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist; train it first: python -m sf_core.toy train sf --seed "
                                f"{args.seed}")
    from ..checkpoints.weights import load_checkpoint, save_model

    ck = load_checkpoint(src)
    DEFAULT_MODEL.parent.mkdir(parents=True, exist_ok=True)
    save_model(DEFAULT_MODEL, ck.state_dict, ck.config, causal=ck.causal, dtype=args.dtype,
               extra_meta={"toy": {"seed": args.seed, "source": src.name}})
    DEFAULT_MODEL.chmod(0o644)  # a file of the package, readable by everyone
    rec = ev.record(load_toy_transformer(DEFAULT_MODEL))
    RECORD.write_text(json.dumps(rec, indent=1), encoding="utf-8")
    print(json.dumps({"model": str(DEFAULT_MODEL), "bytes": DEFAULT_MODEL.stat().st_size, "record": rec["summary"]}))
    return 0


def recipe_options(p) -> None:
    g = p.add_argument_group("recipe", "recorded in <root>/recipe.json by the root's first stage; later runs may "
                                       "leave them out (a value that differs from the record is refused)")
    d = recipes.Recipe()
    g.add_argument("--motion-dropout", type=float, metavar="P",
                   help=f"share of the teacher's prompts reduced to the object's words ('a red square'), so it also "
                        f"learns the motion-free score that motion guidance needs (default {d.motion_dropout})")
    g.add_argument("--image-mix", type=float, metavar="P",
                   help=f"share of the teacher's samples with a clean first frame (default {d.image_mix})")
    g.add_argument("--motion-guidance", type=float, metavar="W",
                   help=f"the teacher's motion guidance in DMD's real score and the ODE pairs (default "
                        f"{d.motion_guidance}; 0 = off)")
    g.add_argument("--teacher-steps", type=int, metavar="N", help=f"teacher steps (default {d.teacher_steps})")
    g.add_argument("--clock", action="store_true", default=None,
                   help="the world with a ticker on its top wall (not time-reversible; docs/toy_world.md)")


def asked_recipe(args) -> dict:
    return {k: getattr(args, k) for k in ("motion_dropout", "image_mix", "motion_guidance", "teacher_steps",
                                          "clock")}


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
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a TrainConfig value of the stage (dotted key, JSON value), e.g. --set "
                        "supervised.shift=2.0; repeatable. Use a separate --root: later stages read this one's weights")
    recipe_options(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval", help="evaluate every trained stage of a seed: 1x and 4x rollouts")
    common(p)
    p.add_argument("--videos", type=int, help="N of the 144 eval prompts, evenly spread (default: all)")
    p.add_argument("--eval-seed", type=int, default=0, help="noise seed of the rollouts")
    p.add_argument("--out", default="toy_results/toy_world_results.json",
                   help="results JSON (+ .md table beside it); default: a new folder toy_results/ under the current "
                        "one (the shipped figures in docs/ are only replaced when you name them)")
    p.add_argument("--plot", default="toy_results/toy_world_rollouts.png", help="per-frame plot PNG ('' = none)")
    p.add_argument("--factor", type=int, default=4, choices=(4, 16),
                   help="longest rollout in training lengths (16 adds the 16x table; about 4x the time)")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("experiment", help="train + evaluate stages over seeds at 1x/4x/16x (resumable), mean and "
                                          "spread")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--stages", nargs="+", choices=recipes.STAGES, help="default: every stage")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every stage's steps (a reduced run; recorded and labelled as such)")
    p.add_argument("--root", help="runs directory (default runs/toy, or runs/toy_scale<S> for a reduced run)")
    p.add_argument("--videos", type=int, help="N of the 144 eval prompts, evenly spread (default: all)")
    p.add_argument("--eval-seed", type=int, default=0, help="noise seed of the rollouts")
    p.add_argument("--train-only", action="store_true", help="train, do not evaluate")
    p.add_argument("--eval-only", action="store_true", help="evaluate what is trained, train nothing")
    p.add_argument("--out", default="toy_results/toy_experiment",
                   help="summary path stem (.json, .md, .png); default under toy_results/ in the current folder")
    p.add_argument("--plot", default="1", help="'' = no plot (the plot needs matplotlib)")
    recipe_options(p)
    p.set_defaults(fn=cmd_experiment)

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
    except recipes.StageStopped as exc:
        print(str(exc), file=sys.stderr)
        return 75  # EX_TEMPFAIL: try again (the stage resumes from its checkpoint)
    except (FileNotFoundError, ValueError, ModuleNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
