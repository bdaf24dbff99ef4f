"""Headless training nodes. ComfyUI runs nodes under `torch.inference_mode()`, so training happens in its own
process: the node launches `torchrun ... -m sf_core.train run` and follows it (sf_core.train.launcher).

- SF Encode Training Prompts: a prompts file (.txt / .jsonl) encoded with the stock CLIP exactly as
  CLIPTextEncode does, plus the negative prompt, into the trainer's embedding shards (so the trainer never
  loads the text encoder).
- SF Train Self Forcing: writes the run config, launches the trainer (nproc_per_node x nnodes processes),
  streams step / losses / ETA to the UI (progress bar, status text, `selfforcing.training` events), and on
  Cancel stops it cleanly (it finishes the step and writes a checkpoint). Running it again with `resume`
  continues from the latest checkpoint. Outputs the exported generator (a file in diffusion_models that
  Load Diffusion Model reads), the loss plot and the run directory.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from comfy_api.latest import io, ui

from . import host, types

log = logging.getLogger("selfforcing.nodes")

RUNS_SUBDIR = "self_forcing_training"
TrainData = io.Custom("SF_TRAIN_DATA")  # a directory of embedding / latent shards (its path)
RANDOM_MODEL = "(random tiny model - smoke test)"
METHODS = ["dmd", "sid", "ode", "teacher_forcing", "diffusion_forcing", "flow_matching", "cd"]


def _run_folder(*parts: str) -> Path:
    """A folder under the runs folder, required to stay inside the output folder once links are resolved."""
    rel = os.path.join(RUNS_SUBDIR, *parts)
    return Path(host.inside(rel, {"output": host.output_directory()}, "run folder", rel))


def _resolve_file(path: str, what: str) -> Path:
    """A file in ComfyUI's input folder (a relative name, or an absolute path that resolves inside it)."""
    p = Path(host.inside(str(Path(path.strip()).expanduser()), {"input": host.input_directory()}, what,
                         os.path.basename(path.strip()) or "file.txt"))
    if not p.is_file():
        raise host.NodeInputError(f"{what} {path.strip()!r} does not exist in ComfyUI's input folder "
                                  f"({host.input_directory()}); put it there")
    return p


def check_paths(cfg, run_dir: Path) -> None:
    """Every file or folder the trainer reads lies in ComfyUI's input, output or model folders, and it writes only
    into this run's folder: the node's settings come from a graph sent to the unauthenticated /prompt."""
    from sf_core.train.reward import spec_path

    reads = {"input": host.input_directory(), "output": host.output_directory(), "models": host.model_roots()}
    named = [(f"models.{r}", getattr(cfg.models, r)) for r in ("generator", "teacher", "critic")]
    named += [("data.embeddings", cfg.data.embeddings), ("data.latents", cfg.data.latents)]
    named += [(f"reward.{w}", spec_path(getattr(cfg.reward, w), w)) for w in ("image", "video", "decoder")]
    if cfg.checkpoint.resume not in ("auto", "none"):
        named.append(("checkpoint.resume", cfg.checkpoint.resume))
    for key, value in named:
        if value:
            host.inside(str(value), reads, key, os.path.basename(str(value).rstrip("/")) or "name")
    if os.path.realpath(cfg.out_dir) != os.path.realpath(run_dir):
        raise host.NodeInputError(f"out_dir={cfg.out_dir!r}: the training node writes only into its run folder "
                                  f"({run_dir}, from run_name); remove out_dir from the overrides")


def _safe_name(name: str, what: str) -> str:
    name = name.strip()
    if not name or any(c in name for c in "/\\") or name in (".", ".."):
        raise host.NodeInputError(f"{what} {name!r} must be a plain folder name (no slashes)")
    return name


def clip_encoder(clip):
    """`encode(list[str]) -> [B, L, D]` with CLIPTextEncode semantics (tokenize, encode_from_tokens_scheduled,
    the cond tensor of the first entry), one prompt at a time since lengths may differ."""
    def encode(prompts: list[str]) -> torch.Tensor:
        outs = []
        for p in prompts:
            cond = clip.encode_from_tokens_scheduled(clip.tokenize(p))
            outs.append(cond[0][0][0].float().cpu())
        n = max(o.shape[0] for o in outs)
        return torch.stack([torch.nn.functional.pad(o, (0, 0, 0, n - o.shape[0])) for o in outs])
    return encode


class EncodeTrainingPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_EncodeTrainingPrompts",
            display_name="SF Encode Training Prompts",
            category=f"{types.CATEGORY}/training",
            description="Encode every prompt of a text file (one per line, or JSONL) with the text encoder, like "
                        "CLIPTextEncode, into the embedding cache that SF Train Self Forcing reads.",
            inputs=[
                io.Clip.Input("clip", tooltip="The Wan text encoder (Load CLIP, type wan)."),
                io.String.Input("prompts_file", default="prompts.txt",
                                tooltip="A .txt (one prompt per line, # comments) or .jsonl file; absolute, or "
                                        "relative to ComfyUI's input folder. JSONL lines with a 'partial' field "
                                        "(the prompt without the words to amplify) enable dmd.partial_guidance."),
                io.String.Input("negative_prompt", default="", multiline=True,
                                tooltip="The unconditional prompt of the teacher's CFG (Wan's default negative "
                                        "prompt is usual)."),
                io.String.Input("name", default="prompts",
                                tooltip="Folder name of the cache under output/self_forcing_training/embeddings."),
            ],
            outputs=[TrainData.Output(display_name="train_data")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, clip, prompts_file, negative_prompt, name) -> io.NodeOutput:
        from sf_core.train.data import DataError, encode_prompts, read_prompt_file

        try:
            prompts, partials = read_prompt_file(_resolve_file(prompts_file, "prompts file"))
        except DataError as e:
            raise host.NodeInputError(str(e)) from None
        out = _run_folder("embeddings", _safe_name(name, "name"))
        node = cls.hidden.unique_id if cls.hidden else None
        bar = host.Progress(len(prompts), node)
        encode_prompts(prompts, clip_encoder(clip), out, negative_prompt=negative_prompt, batch_size=1,
                       encoder_name="comfyui-clip", dtype=torch.bfloat16,
                       progress=lambda n, total: bar.update(n), partials=partials)
        host.send_text(f"encoded {len(prompts)} prompts into {out}", node)
        return io.NodeOutput(str(out))


def _model_options() -> list[str]:
    return [RANDOM_MODEL] + sorted(f for f in host.model_files("diffusion_models")
                                   if f.lower().endswith((".pt", ".pth", ".safetensors", ".sft")))


def build_config(*, method: str, embeddings_dir: str, generator: str, teacher: str, critic: str, max_steps: int,
                 batch_size: int, config_file: str, overrides: str, run_dir: Path,
                 long_rollout_factor: int = 1) -> dict:
    """The trainer's config dict from the node's widgets (a config file, if given, is the base)."""
    from sf_core.config import WanConfig
    from sf_core.train.config import LATENT_METHODS, TrainConfig, apply_overrides, parse_set_args
    from sf_core.train.data import ShardDataset
    from sf_core.train.reward import refuse_code_specs

    base = TrainConfig.load(_resolve_file(config_file, "config file")) if config_file.strip() else TrainConfig()
    d = base.to_dict()
    d.update(method=method, max_steps=int(max_steps), out_dir=str(run_dir))
    d["data"].update(batch_size=int(batch_size))
    if int(long_rollout_factor) > 1:  # a config file's own factor stays unless the widget asks for one
        d["long_rollout"].update(factor=int(long_rollout_factor))
    key = "latents" if method in LATENT_METHODS else "embeddings"
    d["data"][key] = embeddings_dir
    models = d["models"]
    for role, choice in (("generator", generator), ("teacher", teacher), ("critic", critic)):
        models[role] = None if choice == RANDOM_MODEL else host.model_path("diffusion_models", choice)
    if RANDOM_MODEL in (generator, teacher, critic):  # smoke test: tiny nets sized for the cached embeddings
        text_dim = ShardDataset(embeddings_dir).text_dim
        models["wan"] = {**WanConfig.tiny().to_dict(), "text_dim": text_dim}
        d["rollout"].update(num_frames=6, latent_height=4, latent_width=4)
        d["dist"].update(mixed_precision=False)
    cfg = TrainConfig.from_dict(d)
    lines = [ln.strip() for ln in overrides.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if lines:
        cfg = apply_overrides(cfg, parse_set_args(lines))
    refuse_code_specs(cfg.reward, "the training node (a graph sent to ComfyUI's /prompt)")
    check_paths(cfg, run_dir)
    return cfg.to_dict()


class TrainSelfForcing(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        models = _model_options()
        return io.Schema(
            node_id="SF_TrainSelfForcing",
            display_name="SF Train Self Forcing",
            category=f"{types.CATEGORY}/training",
            description="Run Self Forcing DMD post-training (or a variant) in a separate torchrun process, with live "
                        "progress. Cancel stops it after a checkpoint; queue it again with resume on to continue.",
            inputs=[
                io.Combo.Input("method", options=METHODS, default="dmd",
                               tooltip="dmd: Self Forcing DMD (the paper). sid: score identity distillation. "
                                       "ode: ODE-regression init. teacher_forcing / diffusion_forcing / "
                                       "flow_matching: supervised baselines on clean latents. cd: causal "
                                       "consistency distillation from a causal teacher on clean latents (an init "
                                       "without ODE pairs, or with LoRA + reward overrides T2V-Turbo's recipe)."),
                io.Combo.Input("generator", options=models, default=RANDOM_MODEL,
                               tooltip="The causal student to train (e.g. the ODE-initialised Self Forcing "
                                       "checkpoint)."),
                io.Combo.Input("teacher", options=models, default=RANDOM_MODEL,
                               tooltip="The frozen real score (bidirectional Wan2.1)."),
                io.Combo.Input("critic", options=models, default=RANDOM_MODEL,
                               tooltip="Initial weights of the fake score (usually the 1.3B base, the same file as "
                                       "the teacher)."),
                io.String.Input("run_name", default="self_forcing_dmd",
                                tooltip="Folder under output/self_forcing_training; checkpoints, metrics and the "
                                        "export go there."),
                io.Int.Input("max_steps", default=600, min=1, max=10_000_000, tooltip="Trainer steps (600 in the "
                                                                                     "paper at batch 64)."),
                io.Int.Input("batch_size", default=1, min=1, max=1024, tooltip="Samples per process."),
                io.Int.Input("nproc_per_node", default=1, min=1, max=64, tooltip="Processes (GPUs) on this machine."),
                io.Int.Input("nnodes", default=1, min=1, max=4096, tooltip="Machines; start the same workflow on "
                                                                           "each with its node_rank."),
                io.Int.Input("node_rank", default=0, min=0, max=4095, tooltip="This machine's index (0..nnodes-1)."),
                io.String.Input("master_addr", default="127.0.0.1", tooltip="Address of node 0 (multi-node only)."),
                io.Int.Input("master_port", default=29500, min=1, max=65535, tooltip="Rendezvous port (multi-node)."),
                io.Boolean.Input("resume", default=True, tooltip="Continue from the run's latest checkpoint. Off: "
                                                                 "the run folder must not hold checkpoints yet."),
                TrainData.Input("train_data", optional=True,
                                tooltip="From SF Encode Training Prompts (prompt embeddings)."),
                io.String.Input("data_dir", default="", optional=True,
                                tooltip="Used when train_data is not connected: a shard directory (prompt embeddings "
                                        "from `python -m sf_core.train encode-prompts`, or latent / ODE-pair shards "
                                        "for the supervised methods)."),
                io.String.Input("config_file", default="", optional=True,
                                tooltip="Optional .json/.toml trainer config used as the base (see docs/training.md)."),
                io.String.Input("overrides", default="", multiline=True, optional=True,
                                tooltip="One KEY=VALUE per line, e.g. optim.lr=1e-6 or checkpoint.every=25."),
                io.Int.Input("long_rollout_factor", default=1, min=1, max=64, optional=True,
                             tooltip="dmd / sid: roll the generator out this many times its training length on a "
                                     "rolling KV cache and train on a window of it (Self-Forcing++ / LongLive), "
                                     "against drift in long videos. 1 = off (the paper)."),
            ],
            outputs=[io.String.Output(display_name="checkpoint_path"), io.Image.Output(display_name="loss_plot"),
                     io.String.Output(display_name="run_dir")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
            not_idempotent=True,
        )

    @classmethod
    def execute(cls, method, generator, teacher, critic, run_name, max_steps, batch_size, nproc_per_node, nnodes,
                node_rank, master_addr, master_port, resume, train_data=None, data_dir="", config_file="",
                overrides="", long_rollout_factor=1) -> io.NodeOutput:
        from sf_core.config import ConfigError
        from sf_core.train import checkpoint as ckpt
        from sf_core.train.launcher import LaunchSpec, TrainingFailed, TrainingProcess, follow

        node = cls.hidden.unique_id if cls.hidden else None
        embeddings_dir = train_data or (data_dir or "").strip()
        if not embeddings_dir:
            raise host.NodeInputError("connect train_data (SF Encode Training Prompts) or set data_dir")
        if not train_data:  # a folder named in the graph: only inside ComfyUI's input or output folder
            embeddings_dir = host.inside(embeddings_dir, {"input": host.input_directory(),
                                                          "output": host.output_directory()},
                                         "data_dir", "selfforcing/train/embeddings/prompts")
        run_dir = _run_folder(_safe_name(run_name, "run_name"))
        if not resume and ckpt.list_checkpoints(run_dir):
            raise host.NodeInputError(f"{run_dir} already holds checkpoints; turn resume on to continue that run, "
                                      f"or choose another run_name (nothing is deleted)")
        try:
            cfg = build_config(method=method, embeddings_dir=embeddings_dir, generator=generator, teacher=teacher,
                               critic=critic, max_steps=max_steps, batch_size=batch_size, config_file=config_file,
                               overrides=overrides, run_dir=run_dir, long_rollout_factor=long_rollout_factor)
        except (ConfigError, FileNotFoundError) as e:
            raise host.NodeInputError(str(e)) from None
        cfg["checkpoint"]["resume"] = "auto" if resume else "none"
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = run_dir / "node_config.json"
        cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        spec = LaunchSpec(cfg_path, run_dir, nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank,
                          master_addr=master_addr, master_port=master_port)
        bar = host.Progress(int(max_steps), node)

        def on_rows(rows, status):
            last = rows[-1]
            bar.update(int(last["step"]))
            parts = [f"step {last['step']}/{max_steps}"]
            parts += [f"{k} {v:.4g}" for k, v in last.items() if k.endswith(("loss", "norm"))]
            parts.append(f"ETA {int(last.get('eta_s', 0)) // 60} min")
            host.send_text(" | ".join(parts), node)
            host.send_event("training", {"node": node, "run_dir": str(run_dir), "rows": rows,
                                         "max_steps": int(max_steps)})

        try:
            proc = TrainingProcess(spec)
            status = follow(proc, on_rows, host.check_interrupt, poll_s=1.0)
        except TrainingFailed as e:
            raise host.NodeInputError(f"training failed: {e} (log: {run_dir / 'train.log'})") from None
        export = status.get("export") or ""
        if export:
            export = _publish(Path(export), run_name)
        plot = _image(status.get("plot"))
        text = f"{status.get('state')} at step {status.get('step')}; export: {export or 'none'}"
        host.send_text(text, node)
        return io.NodeOutput(export, plot, str(run_dir), ui=ui.PreviewText(text))


def _publish(export: Path, run_name: str) -> str:
    """Copy the exported generator into diffusion_models/self_forcing/ so Load Diffusion Model lists it."""
    try:
        folder = Path(host.model_folder("diffusion_models")) / "self_forcing"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{run_name}_{export.name}"
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(export, tmp)
        os.replace(tmp, target)
        return str(target)
    except (OSError, KeyError) as e:
        log.warning("could not copy %s into diffusion_models (%s); use it from the run folder", export, e)
        return str(export)


def _image(path) -> torch.Tensor:
    """A PNG as a ComfyUI IMAGE [1, H, W, 3] in [0, 1] (a blank 64x64 image if there is none)."""
    from PIL import Image

    if not path or not Path(path).is_file():
        return torch.zeros(1, 64, 64, 3)
    img = Image.open(path).convert("RGB")
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


NODES = [EncodeTrainingPrompts, TrainSelfForcing]
