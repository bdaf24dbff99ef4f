"""Training recipes of the toy model, run by the project's one trainer (`sf_core.train`) on the toy world.

    teacher   bidirectional flow matching on world videos (10 % empty prompts, for CFG)
    tf        causal student, teacher forcing (clean ground-truth context), initialised from the teacher
    df        causal student, diffusion forcing (independently noised context), initialised from the teacher
    ode       causal student, ODE-regression initialisation on the teacher's ODE pairs
    sf        Self Forcing: DMD on self-rollouts, generator from `ode`, real score = teacher (CFG),
              critic initialised from the teacher
    tf_dmd    the paper's few-step "TF + DMD" baseline: as sf, but the generator's samples come from one
              teacher-forced pass over noised ground-truth chunks (`sf_core.toy.methods.ForcedDMD`)
    df_dmd    "DF + DMD" (CausVid): the same with a diffusion-forced (block-causal, noisy context) pass
    sf_long   Self Forcing with long rollouts (Self-Forcing++ / LongLive): as sf, but the generator rolls out
              4 x the training length on a rolling cache and DMD / critic see a 12-frame window of it
    cd        causal consistency distillation (Causal Forcing++): from the tf student, with tf as the causal
              teacher, on world videos -- an initialisation without ODE pairs
    cd_dmd    Self Forcing DMD from the cd initialisation instead of the ODE one

Every stage is `sf_core.train.trainer.Trainer` with a `TrainConfig` built here and the world as its dataset
(`ToyWorldDataset`, rendered on demand). Everything is a function of the seed: the world samples, the noise
and timestep draws (the trainer's keyed generators) and the initial weights. A stage writes
`<root>/seed<S>/<stage>/` (checkpoints, metrics.jsonl, loss.png) and its exported weights to
`<root>/seed<S>/<stage>.safetensors`; later stages read the earlier ones' exports.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import ToyWorldDataset
from .spec import CHUNK_FRAMES, LATENT_HW, SHIFT, STEPS, TEACHER_CFG, TRAIN_FRAMES, WORLD, toy_wan_config

log = logging.getLogger(__name__)

STAGES = ("teacher", "tf", "df", "ode", "sf", "tf_dmd", "df_dmd", "sf_long", "cd", "cd_dmd")
NEEDS = {"teacher": (), "tf": ("teacher",), "df": ("teacher",), "ode": ("teacher",), "sf": ("teacher", "ode"),
         "tf_dmd": ("teacher", "ode"), "df_dmd": ("teacher", "ode"), "sf_long": ("teacher", "ode"),
         "cd": ("tf",), "cd_dmd": ("teacher", "cd")}
INITS = ("ode", "cd")  # initialisation stages a later stage runs by itself when they are missing
LONG_FACTOR = 4  # sf_long: rollouts of 4 x the training length
FORCED = {"tf_dmd": "teacher_forcing", "df_dmd": "diffusion_forcing"}  # DMD stages with a forced generator
DEFAULT_ROOT = Path("runs/toy")


class StageStopped(RuntimeError):
    """A stage was asked to stop (SIGTERM / SIGINT) and saved a checkpoint: running it again resumes it."""


@dataclass(frozen=True)
class StageSettings:
    """The knobs that differ between stages (the rest is `base_config`)."""

    method: str
    steps: int
    batch: int
    lr: float
    lr_critic: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    ema_start: int = 0
    prompt_dropout: float = 0.0
    latents: bool = True


SETTINGS = {
    "teacher": StageSettings("flow_matching", steps=10000, batch=16, lr=5e-4, ema_start=500, prompt_dropout=0.1),
    "tf": StageSettings("teacher_forcing", steps=1000, batch=16, lr=2e-4, ema_start=200),
    "df": StageSettings("diffusion_forcing", steps=1000, batch=16, lr=2e-4, ema_start=200),
    "ode": StageSettings("ode", steps=1000, batch=16, lr=2e-4, ema_start=200),
    "sf": StageSettings("dmd", steps=1000, batch=8, lr=5e-5, lr_critic=1e-4, betas=(0.0, 0.999), ema_start=200,
                        latents=False),
}
SETTINGS["tf_dmd"] = SETTINGS["df_dmd"] = StageSettings(**{**SETTINGS["sf"].__dict__, "latents": True})
SETTINGS["sf_long"] = SETTINGS["cd_dmd"] = SETTINGS["sf"]
SETTINGS["cd"] = StageSettings("cd", steps=1000, batch=16, lr=1e-4, ema_start=0)
CD_STEPS = 48  # consistency grid (a multiple of 4: the sampling steps lie on it)
ODE_PROMPTS = 512  # teacher ODE pairs (world prompts, each with its own noise)
ODE_STEPS = 24


@dataclass(frozen=True)
class Recipe:
    """How a root's stages are trained beyond their `SETTINGS`: written to `<root>/recipe.json` by the root's first
    stage and read by every later stage and evaluation of that root (a root never mixes recipes).

    motion_dropout: share of the teacher's prompts reduced to the object's words (it learns the motion-free
    score); image_mix: share of the teacher's samples with a clean first frame (`supervised.image_mix`: it learns
    which way time runs, docs/toy_world.md); motion_guidance: the teacher's partial-prompt guidance wherever it
    teaches (DMD's real score `dmd.partial_guidance`, the ODE pairs) and in its reference samples; clock: the
    world with a ticker on its wall; teacher_steps: the teacher's training steps.
    """

    motion_dropout: float = 0.15
    image_mix: float = 0.3
    motion_guidance: float = 2.0
    clock: bool = False
    teacher_steps: int = 20000

    @property
    def world(self):
        return dataclasses.replace(WORLD, clock=True) if self.clock else WORLD


# the recipe of roots trained before recipe.json existed (a teacher there and no record)
LEGACY = Recipe(motion_dropout=0.0, image_mix=0.0, motion_guidance=0.0, clock=False, teacher_steps=10000)


def read_recipe(root: str | Path) -> tuple[Recipe, bool]:
    """(the recipe of `root`, whether it is recorded): its record, else `LEGACY` for a root whose teacher predates
    records, else the default `Recipe`. Reads only (evaluations and reports use it)."""
    import json

    path = Path(root) / "recipe.json"
    if path.is_file():
        return Recipe(**json.loads(path.read_text(encoding="utf-8"))), True
    legacy = any(Path(root).glob("seed*/teacher.safetensors")) or any(Path(root).glob("seed*/teacher/checkpoints"))
    return (LEGACY if legacy else Recipe()), False


def root_recipe(root: str | Path, asked: dict | None = None) -> Recipe:
    """The recipe a run trains `root` with: its record, else a new record (`read_recipe`'s with `asked` applied).
    `asked`: {field: value} given by the user (None = not given); a value that differs from the record is
    refused."""
    import json

    asked = {k: v for k, v in (asked or {}).items() if v is not None}
    rec, recorded = read_recipe(root)
    if recorded:
        diff = {k: (getattr(rec, k), v) for k, v in asked.items() if getattr(rec, k) != v}
        if diff:
            raise ValueError(f"{root} is trained with another recipe: {diff} (recorded, asked); leave these options "
                             f"out, or use another --root")
        return rec
    rec = dataclasses.replace(rec, **asked)
    from ..fileio import atomic_write_text

    Path(root).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(root) / "recipe.json", json.dumps(dataclasses.asdict(rec), indent=1))
    return rec


def stage_steps(stage: str, recipe: Recipe) -> int:
    return recipe.teacher_steps if stage == "teacher" else SETTINGS[stage].steps


def stage_dir(root: str | Path, seed: int, stage: str) -> Path:
    return Path(root) / f"seed{seed}" / stage


def stage_weights(root: str | Path, seed: int, stage: str) -> Path:
    """Where a stage's exported weights live."""
    return Path(root) / f"seed{seed}" / f"{stage}.safetensors"


def base_config(stage: str, seed: int, root: str | Path, *, steps: int | None = None, recipe: Recipe = LEGACY):
    """The `TrainConfig` of a stage (toy sizes, CPU single process, fp32) under `recipe`."""
    from ..train.config import (CheckpointConfig, DataConfig, DistConfig, DMDConfig, EMAConfig, ModelsConfig,
                                OptimConfig, RolloutConfig, SupervisedConfig, TrainConfig)

    s = SETTINGS[stage]
    w = lambda name: str(stage_weights(root, seed, name))  # noqa: E731
    models = ModelsConfig(generator=w("init"), init_seed=seed)
    if stage in ("tf", "df", "ode"):
        models = ModelsConfig(generator=w("teacher"), teacher=w("teacher"), init_seed=seed)
    elif stage in ("sf", "sf_long", *FORCED):
        models = ModelsConfig(generator=w("ode"), teacher=w("teacher"), critic=w("teacher"), init_seed=seed)
    elif stage == "cd_dmd":
        models = ModelsConfig(generator=w("cd"), teacher=w("teacher"), critic=w("teacher"), init_seed=seed)
    elif stage == "cd":  # Causal Forcing++: the AR-diffusion (tf) model is both the start and the causal teacher
        models = ModelsConfig(generator=w("tf"), teacher=w("tf"), init_seed=seed)
    n = steps or stage_steps(stage, recipe)
    data = DataConfig(batch_size=s.batch, **({"embeddings": "toy-world"} if s.method == "dmd" else
                                             {"latents": "toy-world"}))
    if stage == "ode":
        data = DataConfig(batch_size=s.batch, latents=str(stage_dir(root, seed, "ode") / "pairs"))
    keep = tuple(range(0, ODE_STEPS + 1, ODE_STEPS // len(STEPS)))
    from ..train.config import ConsistencyConfig, LongRolloutConfig

    extra = {}
    if stage == "sf_long":
        extra["long_rollout"] = LongRolloutConfig(factor=LONG_FACTOR, window="uniform")
    if stage == "cd":
        # guidance 1 = the tf teacher's conditional velocity: tf is trained without prompt dropout, so it has no
        # unconditional score to guide with; the EMA target of T2V-Turbo / LCM (0.95)
        extra["consistency"] = ConsistencyConfig(steps=CD_STEPS, skip=1, guidance=1.0, loss="l2", target="ema")
    return TrainConfig(
        **extra,
        method=s.method, out_dir=str(stage_dir(root, seed, stage)), max_steps=n, seed=seed, log_every=25,
        export_dtype="float32", models=models,
        rollout=RolloutConfig(num_frames=TRAIN_FRAMES, latent_height=LATENT_HW[0], latent_width=LATENT_HW[1],
                              chunk_frames=CHUNK_FRAMES, denoising_steps=STEPS, shift=SHIFT),
        # teacher CFG: x0_c + TEACHER_CFG (x0_c - x0_u). Wan's Self Forcing uses 3; the toy teacher's own samples
        # lose shape accuracy at 3 (0.63 vs 0.82 at 1, docs/toy_world.md), so its students learn from 1
        dmd=DMDConfig(guidance=TEACHER_CFG, update_ratio=5, partial_guidance=recipe.motion_guidance),
        # no bell weighting: it gives t ~ 1000 (nearly) zero weight, and the high-noise end is where a few-step
        # sampler decides where the object is and which way it goes
        supervised=SupervisedConfig(shift=SHIFT, loss_weighting=False, ode_steps=ODE_STEPS,
                                    ode_guidance=TEACHER_CFG + 1.0, ode_keep=keep,
                                    ode_partial_guidance=recipe.motion_guidance,
                                    image_mix=recipe.image_mix if stage == "teacher" else 0.0),
        optim=OptimConfig(lr=s.lr, lr_critic=s.lr_critic or s.lr, betas=s.betas, betas_critic=s.betas,
                          weight_decay=0.0, max_grad_norm=1.0, max_grad_norm_critic=1.0),
        ema=EMAConfig(decay=0.95 if stage == "cd" else 0.99, start_step=min(s.ema_start, n - 1)),
        data=data,
        dist=DistConfig(backend="gloo", fsdp=False, mixed_precision=False, activation_checkpointing=False),
        checkpoint=CheckpointConfig(every=max(50, n // 5), keep_last=1, resume="auto"),
    )


def write_init(seed: int, root: str | Path, config=None) -> Path:
    """Wan's own initialisation of the toy transformer for `seed` (xavier matrices, zero head), as a file the
    trainer loads: its random-model fallback is a test scheme, not a training initialisation."""
    from ..checkpoints.weights import save_model
    from ..model.transformer import WanTransformer

    path = stage_weights(root, seed, "init")
    if not path.is_file():
        torch.manual_seed(seed)
        cfg = config or toy_wan_config()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(path, WanTransformer(cfg).init_weights(), cfg, dtype=torch.float32)
    return path


def dataset(stage: str, seed: int, recipe: Recipe = LEGACY) -> ToyWorldDataset:
    """The stage's world data: the recipe's world; motion dropout for the teacher only (students learn the full
    prompts; partial guidance reads each sample's object prompt, `Sample.partial`)."""
    s = SETTINGS[stage]
    md = recipe.motion_dropout if stage == "teacher" else 0.0
    return ToyWorldDataset(seed, prompt_dropout=s.prompt_dropout, motion_dropout=md, latents=s.latents,
                           spec=recipe.world)


def _check_needs(stage: str, root: Path, seed: int) -> None:
    for need in NEEDS[stage]:
        if need in INITS:
            _check_needs(need, root, seed)  # run by the stages that need it when missing
            continue
        if not stage_weights(root, seed, need).is_file():
            raise FileNotFoundError(f"stage {stage!r} needs {stage_weights(root, seed, need)}; train it first: "
                                    f"python -m sf_core.toy train {need} --seed {seed}")


def _check_data_record(out_dir: Path, record: dict) -> None:
    """Write the stage's dataset settings beside its checkpoints; refuse to resume a stage with other ones."""
    import json

    path = out_dir / "dataset.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (old.get(k), v) for k, v in record.items() if old.get(k, 0.0) != v}
        if diff:
            raise ValueError(f"{out_dir} was trained with other dataset settings {diff} (saved, asked); use the "
                             f"same values or another --root")
        return
    from ..fileio import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record))


def make_ode_pairs(seed: int, root: str | Path, prompts: int = ODE_PROMPTS, recipe: Recipe = LEGACY) -> Path:
    """Teacher ODE pairs (Euler with CFG and the recipe's motion guidance, `sf_core.train.methods.ode`) for
    `prompts` world prompts."""
    from ..train.distributed import init_distributed
    from ..train.methods.ode import generate_ode_pairs
    from ..train.models import load_net

    cfg = base_config("ode", seed, root, recipe=recipe)
    out = Path(cfg.data.latents)
    if (out / "index.json").is_file():
        log.info("ODE pairs exist: %s", out)
        return out
    info = init_distributed(cfg.dist)
    teacher = load_net(cfg.models.teacher, "teacher", cfg).requires_grad_(False)
    src = ToyWorldDataset(seed + 1, size=prompts, latents=False, spec=recipe.world)
    # saved as they go (every 32 pairs): an interrupted stage resumes after the last saved part
    return generate_ode_pairs(cfg, teacher, src, out, info,
                              progress=lambda n, t: (n == 1 or n % 32 == 0 or n == t)
                              and log.info("ODE pairs %d/%d", n, t))


def train_stage(stage: str, seed: int = 0, root: str | Path = DEFAULT_ROOT, *, steps: int | None = None,
                overrides: dict | None = None, model_config=None, ode_prompts: int = ODE_PROMPTS,
                recipe: dict | None = None) -> Path:
    """Run one stage from scratch (or resume it) and return its exported weights.

    overrides: dotted `TrainConfig` overrides ({"data.batch_size": 4}); model_config: the teacher's WanConfig
    (default `toy_wan_config()`; later stages take their sizes from the files they start from); ode_prompts:
    number of teacher ODE pairs (stage ode); recipe: `Recipe` fields asked for ({"clock": True}); the root's
    recipe is recorded by its first stage (`root_recipe`) and a stage refuses values that differ from it.
    """
    from ..train.config import apply_overrides
    from ..train.distributed import init_distributed
    from ..train.trainer import Trainer

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    root = Path(root)
    _check_needs(stage, root, seed)
    rec = root_recipe(root, recipe)
    for init in INITS:
        if init in NEEDS[stage] and not stage_weights(root, seed, init).is_file():
            train_stage(init, seed, root, steps=steps, overrides=overrides, ode_prompts=ode_prompts)
    if stage == "ode":
        make_ode_pairs(seed, root, ode_prompts, rec)
    if stage == "teacher":
        write_init(seed, root, model_config)
    cfg = base_config(stage, seed, root, steps=steps, recipe=rec)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    log.info("stage %s (seed %d): %d steps in %s; an interrupted run resumes from its latest checkpoint", stage,
             seed, cfg.max_steps, cfg.out_dir)
    torch.manual_seed(seed)
    info = init_distributed(cfg.dist)
    data = None if stage == "ode" else dataset(stage, seed, rec)
    if data is not None:
        _check_data_record(Path(cfg.out_dir), {"motion_dropout": data.motion_dropout,
                                               "prompt_dropout": data.prompt_dropout, "clock": data.spec.clock})
    trainer = Trainer(cfg, info, dataset=data)
    if stage in FORCED:
        from .methods import ForcedDMD

        trainer.method = ForcedDMD(cfg, FORCED[stage])  # the trainer's DMD with forced generator samples
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out_dir) / "config.json").write_text(cfg.to_json(), encoding="utf-8")
    status = trainer.run()
    if status.get("state") == "stopped":
        raise StageStopped(f"stage {stage} (seed {seed}) stopped at step {status.get('step')} with a checkpoint; "
                           f"run the same command again to resume")
    if status.get("state") != "finished":
        raise RuntimeError(f"stage {stage} did not finish: {status}")
    exported = trainer.export_path or Path(status["export"])
    target = stage_weights(root, seed, stage)
    shutil.copyfile(exported, target)
    log.info("stage %s done: %s", stage, target)
    return target
