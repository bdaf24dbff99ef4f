"""SF Image to Video / SF Extend Video in the stand-in host, on the shipped toy model: the node gives what
sf_core gives for the same frames (encode -> commit -> generate), the video starts with the image / with the
given frames, and bad images are refused clearly."""
import pytest
import torch

from nodes_harness import install_stubs

SCENE = dict(shape="circle", colour="blue", direction="down", speed="slow", x=8.0, y=5.0)


@pytest.fixture()
def host(tmp_path):
    install_stubs(str(tmp_path))
    return tmp_path


def _kw(**over):
    kw = dict(seed=3, timesteps="1000,750,500,250", warp_timesteps=True, shift=5.0, chunk_frames=3, window_frames=12,
              fps=8.0, live_preview=True)
    kw.update(over)
    return kw


def _world(frames, up=2):
    from sf_core.toy.world import Scene, render

    v = render(Scene(**SCENE), frames)  # [3, T, 16, 16] in [-1, 1]
    img = ((v + 1) / 2).permute(1, 2, 3, 0)  # [T, 16, 16, 3]
    return img.repeat_interleave(up, 1).repeat_interleave(up, 2)


def _core(frames_img, new_chunks, emit):
    from sf_core.sampling.context_frames import commit_frames, frames_settings
    from sf_core.sampling.pipeline import as_bundle, generate
    from sf_core.sampling.session import SamplingSettings, new_session
    from sf_core.toy import load_toy_bundle
    from sf_core.config import CausalConfig
    from sf_core.toy.codec import ToyDecoder, encode
    from sf_core.toy.world import Scene

    b = as_bundle(load_toy_bundle())
    st = frames_settings(SamplingSettings(steps=(1000, 750, 500, 250), shift=5.0,
                                          causal=CausalConfig(3, window_frames=10, sink_frames=1)))
    s = new_session(b.transformer, b.text_encoder.encode([Scene(**SCENE).prompt]), latent_hw=(8, 8), seed=3,
                    settings=st)
    x = frames_img[:, ::2, ::2].permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1
    z = encode(x)
    commit_frames(b.transformer, s, z, decoder=ToyDecoder(), emit=emit)
    return z, generate(b.transformer, s, num_chunks=new_chunks, decoder=ToyDecoder())


def test_image_to_video_node_equals_the_core_and_starts_with_the_image(host):
    from nodes.context import ImageToVideo
    from nodes.toy import LoadToyModel, ToyTextEncode
    from sf_core.toy.world import Scene

    model, decoder, _ = LoadToyModel.run(upscale=2).args
    cond = ToyTextEncode.run(text=Scene(**SCENE).prompt)[0]
    image = _world(1)
    latent, session, frames = ImageToVideo.run(model=model, positive=cond, image=image, length=13,
                                               preview_decoder=decoder, **_kw()).args
    z0, rest = _core(image, 4, emit=True)
    assert latent["samples"].shape == (1, 12, 13, 8, 8) and session.next_frame == 13
    torch.testing.assert_close(latent["samples"], torch.cat([z0, rest], 2), rtol=0, atol=1e-5)
    assert frames.shape == (13, 32, 32, 3)
    assert (frames[0] - image[0]).abs().max() < 0.03  # the video starts with the image


def test_extend_video_node_equals_the_core_and_keeps_the_given_frames(host):
    from nodes.context import ExtendVideo
    from nodes.toy import LoadToyModel, ToyTextEncode
    from sf_core.toy.world import Scene

    model, decoder, _ = LoadToyModel.run(upscale=2).args
    cond = ToyTextEncode.run(text=Scene(**SCENE).prompt)[0]
    video = _world(24)
    latent, session, frames = ExtendVideo.run(model=model, positive=cond, video=video, chunks=4,
                                              preview_decoder=decoder, **_kw()).args
    _, rest = _core(video[-7:], 4, emit=False)  # window 10 -> the last 7 frames (1 + 2 chunks) are encoded
    torch.testing.assert_close(latent["samples"], rest, rtol=0, atol=1e-5)
    assert frames.shape == (24 + 12, 32, 32, 3) and torch.equal(frames[:24], video)


def test_bad_images_are_refused(host):
    from nodes.context import ImageToVideo
    from nodes.host import NodeInputError
    from nodes.toy import LoadToyModel, ToyTextEncode

    model, decoder, _ = LoadToyModel.run(upscale=2).args
    cond = ToyTextEncode.run(text="a red square moving left fast")[0]
    for img, msg in ((torch.zeros(1, 20, 20, 3), "16x16"), (torch.zeros(1, 32, 32, 2), "channels"),
                     (torch.zeros(32, 32, 3), "IMAGE batch")):
        with pytest.raises(NodeInputError, match=msg):
            ImageToVideo.run(model=model, positive=cond, image=img, length=13, preview_decoder=decoder, **_kw())
    with pytest.raises(NodeInputError, match="nearest valid lengths"):
        ImageToVideo.run(model=model, positive=cond, image=_world(1), length=12, preview_decoder=decoder, **_kw())
    grey = _world(1)[..., :1]
    assert ImageToVideo.run(model=model, positive=cond, image=grey, length=4, preview_decoder=decoder,
                            **_kw())[2].shape[0] == 4
