"""torch.distributed for the trainer: process group, device mesh, FSDP2 `parallelize()`, collectives.

Launch with torchrun (`torchrun --nproc_per_node N --nnodes M ... -m sf_core.train run ...`); a plain
`python -m sf_core.train run` runs as a world of one. gloo on CPU, NCCL on CUDA.

`parallelize()` is the one place that decides how a transformer is distributed (torchtitan style):
activation checkpointing per transformer block (`wan_forward(checkpoint=True)`, non-reentrant), then
FSDP2 `fully_shard` on every block (plus one unit for its cross-attention text K/V projections, which run
outside the block call) and on the root, with bf16 parameters / fp32 gradient reduction when
mixed precision is on. `cast_forward_inputs` stays off: timesteps (e.g. 833.33) and the float64 RoPE
tables must not be rounded to bf16; the forward casts activations itself (`Denoiser.dtype`).
"""
from __future__ import annotations

import datetime
import logging
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from .config import ConfigError, DistConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    local_world: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(cfg: DistConfig, timeout_s: float = 1800.0) -> DistInfo:
    """Join (or create) the default process group. Under torchrun the env:// rendezvous is used; without it a
    single-process group, so every collective below also works for a world of one."""
    cuda = torch.cuda.is_available()
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise ConfigError("dist.backend=nccl needs CUDA GPUs; use dist.backend=gloo (or auto) on CPU")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend, timeout=timeout, device_id=device if device.type == "cuda" else None)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    world = dist.get_world_size()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return DistInfo(dist.get_rank(), world, local_rank, local_world, device, backend)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ collectives
def broadcast_ints(values: list[int], info: DistInfo) -> list[int]:
    """Rank 0's list of ints on every rank (e.g. the exit steps of stochastic gradient truncation)."""
    t = torch.tensor(values, dtype=torch.long, device=info.device)
    dist.broadcast(t, src=0)
    return [int(v) for v in t.tolist()]


def all_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Mean over ranks of scalar metrics (same keys on every rank)."""
    keys = sorted(values)
    if not keys or info.world == 1:
        return dict(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return {k: float(v) / info.world for k, v in zip(keys, t.tolist())}


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if it is True on any (a stop request seen by one rank stops all in step)."""
    t = torch.tensor([1 if flag else 0], dtype=torch.long, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


# ------------------------------------------------------------------------------------------ FSDP2
def make_mesh(info: DistInfo, cfg: DistConfig):
    """1-D mesh (full sharding) or 2-D (replicate, shard) mesh for hybrid sharding."""
    from torch.distributed.device_mesh import init_device_mesh

    if cfg.sharding == "full":
        return init_device_mesh(info.device.type, (info.world,), mesh_dim_names=("shard",))
    shard = cfg.shard_size or info.local_world
    if shard < 1 or info.world % shard:
        raise ConfigError(f"dist.shard_size={shard} must divide the world size {info.world}")
    return init_device_mesh(info.device.type, (info.world // shard, shard), mesh_dim_names=("replicate", "shard"))


def uses_fsdp(info: DistInfo, cfg: DistConfig) -> bool:
    if info.world > 1 and not cfg.fsdp:
        raise ConfigError("dist.fsdp=false is only supported in a single process (gradients would not be "
                          "averaged across ranks); keep dist.fsdp=true with torchrun")
    return cfg.fsdp and info.world > 1


def parallelize(model: nn.Module, info: DistInfo, cfg: DistConfig, mesh=None, *, train: bool = True) -> nn.Module:
    """Activation checkpointing + FSDP2 (per transformer block, then the root) on a Wan module tree.

    The module is moved to the rank's device first. With a world of one (or dist.fsdp off) nothing is sharded.
    """
    model.to(info.device)
    if hasattr(model, "gradient_checkpointing"):
        model.gradient_checkpointing = bool(train and cfg.activation_checkpointing)
    if not uses_fsdp(info, cfg):
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # FSDP2 warns when a unit returns a view (an in-place op on it would skip the all-gather before backward).
    # Ours do (the K/V unit's and each block's `.view` to heads, the root's unpatchified output) but nothing
    # modifies them in place, so the gradients are right (2 processes == 1: tests/test_train_dist.py); a
    # clone per block to silence it would cost memory. Only this message is filtered (docs/training.md).
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(.*\) returned a view tensor",
                            category=UserWarning)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if cfg.mixed_precision else None,
                              reduce_dtype=torch.float32, cast_forward_inputs=False)
    mesh = mesh if mesh is not None else make_mesh(info, cfg)
    for block in model.blocks:
        # wan_forward computes the text K/V of cross-attention before calling the block (they are cached per
        # prompt), so those three modules get their own FSDP unit whose hooks fire when they are called
        ca = block.cross_attn
        fully_shard([ca.k, ca.v, ca.norm_k], mesh=mesh, mp_policy=mp, reshard_after_forward=cfg.reshard_after_forward)
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=cfg.reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=cfg.reshard_after_forward)
    return model


def compute_dtype(cfg: DistConfig) -> torch.dtype:
    return torch.bfloat16 if cfg.mixed_precision else torch.float32


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm (sharded DTensor grads included); returns the norm before clipping."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly sharded) parameter or buffer, on the CPU (a collective for DTensors)."""
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return t.detach().cpu()


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t
