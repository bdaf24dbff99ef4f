"""Saving and restoring a KV cache (mixed into `KVCache`): `state()` gives JSON-able bookkeeping and the valid
rows as tensors (what session files store), `from_state()` rebuilds an equal cache from them, checking every
shape and dtype against the metadata before writing a row."""
from __future__ import annotations

import torch


class KVState:
    def state(self, include_rows: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
        """(metadata, tensors) describing the cache: JSON-able sizes and bookkeeping, and the valid rows
        `k.<layer>` / `v.<layer>` [B, length * tokens_per_frame, heads, head_dim] (unless include_rows=False), as
        stored: a quantised cache gives its codes and `k_scale.<layer>` / `v_scale.<layer>` [B, rows, heads, 1]."""
        if self._plan is not None:
            raise RuntimeError("cannot read the state of a KV cache while a forward call is writing it")
        b, _, heads, head_dim = self.k[0].shape
        meta = {"tokens_per_frame": self.tokens_per_frame, "window_frames": self.window_frames,
                "sink_frames": self.sink_frames, "length": self.length, "end_frame": self.end_frame,
                "positions": list(self.positions), "capacity": self.capacity, "num_layers": self.num_layers,
                "num_heads": int(heads), "head_dim": int(head_dim), "batch": int(b), "included": include_rows,
                "rope_mode": self.rope_mode, "relative": self.relative, "kv_dtype": self.kv_dtype}
        tensors: dict[str, torch.Tensor] = {}
        if include_rows:
            n = self.length * self.tokens_per_frame
            for name, bufs in self._row_lists():
                for i, buf in enumerate(bufs):
                    tensors[f"{name}.{i}"] = buf[:, :n]
        return meta, tensors

    @classmethod
    def from_state(cls, meta: dict, tensors: dict[str, torch.Tensor], *, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> "KVState":
        """Rebuild a cache from `state()` (`dtype`: the compute dtype; the storage format is the saved kv_dtype).
        Without rows (`included` false) the cache comes back empty."""
        window = meta["window_frames"]
        cache = cls.allocate(int(meta["num_layers"]), int(meta["batch"]), int(meta["num_heads"]),
                             int(meta["head_dim"]), int(meta["tokens_per_frame"]),
                             frames=None if window else max(int(meta["capacity"]), 1), window_frames=window,
                             sink_frames=int(meta["sink_frames"]), dtype=dtype, device=device, strict=False,
                             rope_mode=meta.get("rope_mode", "absolute"), kv_dtype=meta.get("kv_dtype", "auto"))
        cache.relative = bool(meta.get("relative", cache.relative))
        if not meta.get("included", True):
            return cache
        t, length = cache.tokens_per_frame, int(meta["length"])
        if length > cache.capacity:
            cache._grow(length)
        positions = [int(p) for p in meta["positions"]]
        if len(positions) != length:
            raise ValueError(f"cache metadata lists {len(positions)} frame positions for {length} frames")
        for name, bufs in cache._row_lists():
            for i, buf in enumerate(bufs):
                rows = tensors[f"{name}.{i}"]
                want = (buf.shape[0], length * t, *buf.shape[2:])
                if tuple(rows.shape) != want:
                    raise ValueError(f"cache tensor {name}.{i} has shape {tuple(rows.shape)}, expected {list(want)} "
                                     f"({length} frames of {t} tokens)")
                if cache.quantised and rows.dtype != buf.dtype:
                    raise ValueError(f"cache tensor {name}.{i} is {rows.dtype}, expected {buf.dtype} for kv_dtype "
                                     f"{cache.kv_dtype!r}")
                buf[:, :rows.shape[1]] = rows.to(device=device, dtype=buf.dtype)
        cache.length, cache.end_frame, cache.positions = length, int(meta["end_frame"]), positions
        return cache
