"""Through the nodes (stand-in host, tiny Wan-format model): a video goes past the 1024-frame RoPE table with the
default positions ("auto": absolute, then relative) instead of stopping with an error."""
import torch

from nodes_harness import FakePatcher, install_stubs, tiny_wan
from test_nodes import sampler_kw


def test_sampler_then_continue_past_1024_latent_frames(tmp_path):
    install_stubs(str(tmp_path))
    from nodes.session import ContinueSession
    from nodes.sampler import CausalSampler

    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, 5, 32, generator=g), {}]]
    model = FakePatcher(tiny_wan(0))
    latent, session, _ = CausalSampler.run(model=model, positive=cond, **sampler_kw(length=4089, window_frames=9))
    assert latent["samples"].shape[2] == 1023 and session.next_frame == 1023
    out = ContinueSession.run(model=model, session=session, chunks=4, switch_policy="recache", fps=16.0,
                              live_preview=False)
    z, s2 = out[0]["samples"], out[1]
    assert s2.next_frame == 1035 and s2.cache.relative and s2.frames_left is None
    assert s2.cache.positions == [0, 1, 2] + list(range(1029, 1035))
    assert torch.isfinite(z).all() and z.abs().max() < 100
