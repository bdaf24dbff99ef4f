"""The training loop (the official `trainer/distillation.py` schedule, for every method).

Per step: if the method has a critic, a generator update every `dmd.update_ratio` steps (step % ratio == 0)
and a critic update every step, each on its own batch; otherwise one generator update. An update = zero
grads, loss, backward, clip the global grad norm, AdamW step (generator: then EMA). After the step: the
EMA starts once step >= ema.start_step; metrics (mean over ranks) go to the log / metrics.jsonl; a
checkpoint is written every `checkpoint.every` steps, at the end, and when a stop is requested (SIGTERM,
SIGINT or a `STOP` file in out_dir, agreed by all ranks after the step).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import torch

from ..config import ConfigError
from . import checkpoint as ckpt
from .config import LATENT_METHODS, TrainConfig
from .data import GlobalBatchSampler, ShardDataset, pad_stack
from .distributed import (DistInfo, all_mean, any_rank, clip_grad_norm, compute_dtype, make_mesh, parallelize,
                          uses_fsdp)
from .ema import EMA, maybe_start
from .export import export_generator, full_state
from .methods import Batch, StepEnv, make_method
from .models import Nets, build_nets, make_optimizer, trainable
from .progress import Progress

log = logging.getLogger(__name__)

STOP_FILE = "STOP"
STARTED_AT = time.time()  # about when this process started: STOP files older than the launch are stale


def open_dataset(cfg: TrainConfig) -> ShardDataset:
    """The run's data: ODE-pair shards (ode), latent shards (supervised methods) or prompt embeddings."""
    if cfg.method in LATENT_METHODS:
        if cfg.data.latents is None:
            raise ConfigError(f"method {cfg.method} trains on clean latents: set data.latents to a latent-shard "
                              f"directory (sf_core.train.data.write_latent_shards, or `python -m sf_core.train "
                              f"ode-pairs` for method ode)")
        return ShardDataset(cfg.data.latents, expect=["ode"] if cfg.method == "ode" else ["latents", "ode"])
    if cfg.data.embeddings is None:
        raise ConfigError(f"method {cfg.method} needs prompt embeddings: set data.embeddings to a directory written "
                          f"by `python -m sf_core.train encode-prompts`")
    return ShardDataset(cfg.data.embeddings)


class Trainer:
    def __init__(self, cfg: TrainConfig, info: DistInfo, *, nets: Nets | None = None, reward=None,
                 dataset: ShardDataset | None = None):
        self.cfg, self.info = cfg, info
        self.dtype = compute_dtype(cfg.dist)
        self.out_dir = Path(cfg.out_dir)
        # data first: cheap checks (missing / empty data, more ranks than samples) before loading weights
        self.data = dataset if dataset is not None else open_dataset(cfg)
        self.sampler = GlobalBatchSampler(len(self.data), cfg.data.batch_size * info.world, cfg.seed,
                                          cfg.data.shuffle)
        if reward is None and cfg.reward.enabled:
            from .reward import RewardTerm
            reward = RewardTerm.from_config(cfg.reward, cfg.rollout, info.device)
        self.method = make_method(cfg, reward=reward)
        if self.method.name in ("dmd", "sid") and cfg.dmd.partial_guidance and self.data[0].partial is None:
            raise ConfigError(f"dmd.partial_guidance={cfg.dmd.partial_guidance} needs a partial prompt per sample "
                              f"and {self.data.root} has none: encode a JSONL prompts file whose lines have a "
                              f"'partial' field (python -m sf_core.train encode-prompts), or set "
                              f"dmd.partial_guidance=0")
        nets = nets if nets is not None else build_nets(cfg, frozen_dtype=self.dtype)
        if self.data.text_dim != nets.config.text_dim:
            raise ConfigError(f"the embeddings in {self.data.root} have text_dim {self.data.text_dim} but the "
                              f"generator expects {nets.config.text_dim}: encode the prompts with the model's "
                              f"text encoder")
        mesh = make_mesh(info, cfg.dist) if uses_fsdp(info, cfg.dist) else None
        parallelize(nets.generator, info, cfg.dist, mesh, train=True)
        if nets.critic is not None:
            parallelize(nets.critic, info, cfg.dist, mesh, train=True)
        if nets.teacher is not None:
            parallelize(nets.teacher, info, cfg.dist, mesh, train=False)
        self.nets = nets
        o = cfg.optim
        self.opt_g = make_optimizer(trainable(nets.generator), o.lr, o.betas, o.weight_decay, o.eps)
        self.opt_c = (make_optimizer(trainable(nets.critic), o.lr_critic, o.betas_critic, o.weight_decay, o.eps)
                      if self.method.has_critic else None)
        self.ema: EMA | None = None
        self.step = 0
        self.position = 0  # global batches consumed
        self.progress = Progress(self.out_dir, cfg.max_steps, enabled=info.is_main, log_every=cfg.log_every)
        self.stop_requested = False
        self.export_path: Path | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        g, og = get_state_dict(self.nets.generator, self.opt_g)
        st = {"generator": g, "optim_generator": og}
        if self.opt_c is not None:
            c, oc = get_state_dict(self.nets.critic, self.opt_c)
            st.update(critic=c, optim_critic=oc)
        if self.ema is not None:
            st["ema"] = self.ema.shadow
        return st

    def train_state(self) -> dict:
        return {"data_position": self.position, "ema": self.ema is not None, "method": self.cfg.method,
                "wan_config": self.nets.config.to_dict(), "config": self.cfg.to_dict()}

    def save(self) -> Path:
        path = ckpt.save(self.out_dir, self.step, self.state_dict(), self.train_state(), self.info,
                         self.cfg.checkpoint.keep_last)
        self.progress.update(checkpoint=str(path))
        self.progress.plot()
        return path

    def load(self, path: str | Path) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        ts = ckpt.read_train_state(path)
        if ts.get("method", self.cfg.method) != self.cfg.method:
            raise ckpt.CheckpointCorrupt(f"checkpoint {path} was written by method {ts.get('method')!r}, this run "
                                         f"is {self.cfg.method!r}; use another out_dir or checkpoint.resume=none")
        if ts.get("ema") and self.ema is None:
            self.ema = EMA.create(self.nets.generator, self.cfg.ema.decay)
        st = self.state_dict()
        ts = ckpt.load(path, st, self.info)
        set_state_dict(self.nets.generator, self.opt_g, model_state_dict=st["generator"],
                       optim_state_dict=st["optim_generator"])
        if self.opt_c is not None:
            set_state_dict(self.nets.critic, self.opt_c, model_state_dict=st["critic"],
                           optim_state_dict=st["optim_critic"])
        self.step, self.position = int(ts["step"]), int(ts["data_position"])
        saved = ts.get("config", {}).get("data", {}).get("batch_size", self.cfg.data.batch_size) * ts.get("world", 1)
        if saved != self.sampler.g:
            log.warning("the checkpoint was trained with a global batch of %d, this run uses %d: the data order "
                        "continues at batch %d but draws different samples than the original run would have",
                        saved, self.sampler.g, self.position)
        log.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ one step
    def next_batch(self) -> Batch:
        idx, ids = self.sampler.local_batch(self.position, self.info.rank, self.info.world)
        self.position += 1
        samples = [self.data[i] for i in idx]
        dev = self.info.device
        ctx = pad_stack([s.embeds.float() for s in samples]).to(dev)
        neg = self.data.negative.float().to(dev)[None].expand(len(samples), -1, -1)
        lat = torch.stack([s.latents for s in samples]) if samples[0].latents is not None else None
        traj = torch.stack([s.trajectory for s in samples]) if samples[0].trajectory is not None else None
        part = (pad_stack([s.partial.float() for s in samples]).to(dev)
                if all(s.partial is not None for s in samples) else None)
        return Batch(ids, ctx, neg, [s.prompt for s in samples], lat, traj, part)

    def _update(self, loss_fn, opt, params, max_norm: float, what: str) -> dict[str, float]:
        opt.zero_grad(set_to_none=True)
        loss, logs = loss_fn(self.nets, self.next_batch(), StepEnv(self.cfg, self.step, self.info, self.dtype,
                                                                     self.ema))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{what} loss is {float(loss)} at step {self.step}; stopped without saving. "
                                     f"Lower the learning rate, or use bf16 instead of fp16")
        loss.backward()
        logs[f"{what}_grad_norm"] = clip_grad_norm(params, max_norm)
        opt.step()
        return logs

    def train_step(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        has_critic = self.method.has_critic
        if not has_critic or self.step % self.cfg.dmd.update_ratio == 0:
            metrics.update(self._update(self.method.generator_loss, self.opt_g, trainable(self.nets.generator),
                                        self.cfg.optim.max_grad_norm, "generator"))
            if self.ema is not None:
                self.ema.update(self.nets.generator)
        if has_critic:
            metrics.update(self._update(self.method.critic_loss, self.opt_c, trainable(self.nets.critic),
                                        self.cfg.optim.max_grad_norm_critic, "critic"))
        self.step += 1
        self.ema = maybe_start(self.ema, self.nets.generator, self.step, self.cfg.ema.decay, self.cfg.ema.start_step)
        return all_mean(metrics, self.info)

    # ------------------------------------------------------------------ the run
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, _frame):
            log.warning("signal %d: stopping after this step (a checkpoint will be written)", signum)
            self.stop_requested = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def resume(self) -> None:
        target = ckpt.resolve_resume(self.cfg.checkpoint.resume, self.out_dir)
        if self.cfg.checkpoint.resume == "auto":
            partial = ckpt.incomplete(self.out_dir)
            newer = [p.name for p in partial if target is None or p.name > target.name]
            if newer:
                log.warning("ignoring incomplete checkpoint folders %s (no .metadata or %s): %s", newer,
                            ckpt.STATE_FILE, f"resuming from the older {target}" if target is not None else
                            "starting from step 0")
        if target is not None:
            self.load(target)

    def run(self) -> dict:
        """Train until max_steps or a stop request; returns the final status."""
        stop_file = self.out_dir / STOP_FILE
        self.resume()  # may refuse a broken checkpoint: nothing in out_dir has been written before this point
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(self.cfg.to_json(), encoding="utf-8")
            launched = float(os.environ.get("SF_TRAIN_LAUNCHED_AT", STARTED_AT))
            if stop_file.exists() and stop_file.stat().st_mtime < launched:
                stop_file.unlink()  # a stale request from an earlier run; a newer one is honoured after step 1
        self.progress.start(self.step)
        self._install_signals()
        try:
            while self.step < self.cfg.max_steps:
                metrics = self.train_step()
                self.progress.step(self.step, metrics)
                stop = any_rank(self.stop_requested or stop_file.exists(), self.info)
                if stop or self.step % self.cfg.checkpoint.every == 0 or self.step == self.cfg.max_steps:
                    self.save()
                if stop:
                    if self.info.is_main:
                        stop_file.unlink(missing_ok=True)
                    self.progress.update(state="stopped")
                    log.info("stopped at step %d; resume with the same command", self.step)
                    return self.progress.status
            self.save()  # no-op if this step is saved already (e.g. resumed at max_steps)
            if self.cfg.export_at_end:
                self.export()
            self.progress.plot()
            self.progress.update(state="finished")
            return self.progress.status
        except BaseException as exc:
            self.progress.update(state="failed", error=f"{type(exc).__name__}: {exc}")
            raise

    def export(self, path: str | Path | None = None) -> Path | None:
        """Write the EMA generator (or the raw one before the EMA starts) with `save_model` (collective)."""
        which = "generator_ema" if self.ema is not None else "generator"
        state = full_state(self.nets.generator, self.ema, self.info)
        out = None
        if self.info.is_main:
            path = path or self.out_dir / "export" / f"{which}_{ckpt.step_name(self.step)}.safetensors"
            meta = {"method": self.cfg.method, "step": self.step, "weights": which, "lora_rank": self.cfg.lora.rank,
                    "denoising_steps": list(self.cfg.rollout.denoising_steps), "shift": self.cfg.rollout.shift}
            out = export_generator(path, state, self.nets.generator, self.nets.config, self.cfg.rollout.causal(),
                                   dtype=self.cfg.export_dtype, meta=meta)
            self.export_path = out
            self.progress.update(export=str(out))
        return out


def run_training(cfg: TrainConfig, *, nets: Nets | None = None, dataset=None, reward=None) -> tuple[dict, Trainer]:
    """Train in this process (a world of one unless torch.distributed is already initialised), e.g. from an
    experiment script: `status, trainer = run_training(cfg, dataset=MemoryDataset(...))`; `trainer.nets`
    holds the trained networks. The caller owns the process group afterwards (`distributed.shutdown()`)."""
    from .distributed import init_distributed

    info = init_distributed(cfg.dist)
    trainer = Trainer(cfg, info, nets=nets, dataset=dataset, reward=reward)
    return trainer.run(), trainer
