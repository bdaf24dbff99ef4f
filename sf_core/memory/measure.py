"""Measured peak tensor memory of a piece of work, to check `sf_core.memory.plan` against.

`peak_tensor_bytes(fn)` runs `fn()` and returns (its result, the peak of bytes allocated above the level at the
start). CUDA: the caching allocator's `max_memory_allocated`. CPU: the allocator events the PyTorch profiler
records with `profile_memory=True` -- each carries the running total of bytes allocated since profiling began
(frees included), so their maximum is the peak; tensors that existed before (the weights) are not in it.
Profiling slows the work down (every op is recorded): use it on tiny and medium configurations.
"""
from __future__ import annotations

from typing import Any, Callable

import torch


def peak_tensor_bytes(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[Any, int]:
    """(fn(), peak bytes of tensors allocated during fn above the starting level) on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, int(torch.cuda.max_memory_allocated(device) - start)
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    peak = 0
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            peak = max(peak, int(node.extra_fields.total_allocated))
        stack.extend(node.children)
    return out, peak


def tensor_bytes(obj: Any) -> int:
    """Bytes of the parameters and buffers of a module (or of a tensor)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    return sum(t.numel() * t.element_size() for t in (*obj.parameters(), *obj.buffers()))


__all__ = ["peak_tensor_bytes", "tensor_bytes"]
