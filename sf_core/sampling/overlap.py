"""Decoding chunk k while chunk k+1 is sampled: a one-worker pipeline between the sampler and the chunk decoder.

`generate(..., overlap_decode=True)` samples each chunk on the calling thread and hands its latents to one worker
thread that runs the chunk decoder (TAEHV, the Wan VAE, ComfyUI's VAE: anything with `decode_chunk(z, state)`).
Chunk k's frames are delivered (on_chunk) after chunk k+1 has been sampled, so throughput goes up by up to the
decoder's share of the time and each chunk reaches the caller one chunk later: the live stream, where latency
counts, keeps the sequential order.

Where the two can run at once:
- CUDA: the worker decodes on its own stream, which waits (an event) for the sampler's stream to have produced
  the latents; kernels of the two streams run concurrently where the GPU has room;
- CPU: the worker's ops run on their own OpenMP team, so the two overlap when torch's thread count leaves cores
  free (e.g. `--threads 1` on two cores); with every core busy it is level with the sequential order.
The decoder's state advances in order (one worker, the next decode submitted after the previous one was
delivered), so the frames and the session's decoder state are exactly those of the sequential order.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from .session import Session


class OverlappedDecoder:
    """One decode in flight at a time: `submit(z)` starts decoding chunk latents z from the session's current
    decoder state; `result()` waits for it and returns (frames, new state)."""

    def __init__(self, decoder: Any, session: Session):
        self.decoder, self.session = decoder, session
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sf-decode")
        dev = session.device
        self.stream = torch.cuda.Stream(device=dev) if dev.type == "cuda" else None
        self.future: Future | None = None

    def submit(self, z: torch.Tensor) -> None:
        if self.future is not None:
            raise RuntimeError("a decode is already in flight: take its result first")
        state = self.session.decoder_state
        ready = None
        if self.stream is not None:
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(z.device))
        self.future = self.pool.submit(self._decode, z, state, ready)

    def _decode(self, z, state, ready):
        with torch.no_grad():
            if self.stream is None:
                return self.decoder.decode_chunk(z, state)
            with torch.cuda.stream(self.stream):
                self.stream.wait_event(ready)
                out = self.decoder.decode_chunk(z, state)
            self.stream.synchronize()
            return out

    def result(self) -> tuple[torch.Tensor, Any]:
        fut, self.future = self.future, None
        return fut.result()

    def close(self) -> None:
        """Wait for a decode still in flight (its result is dropped) and stop the worker."""
        if self.future is not None:
            try:
                self.future.result()
            except BaseException:  # noqa: BLE001 - the caller is already handling the error that stopped the run
                pass
            self.future = None
        self.pool.shutdown(wait=True)


__all__ = ["OverlappedDecoder"]
