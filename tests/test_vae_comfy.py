"""sf_core.vae against ComfyUI's own Wan2.1 VAE (an independent implementation), in ComfyUI's interpreter.

Skipped unless COMFYUI_DIR points at a ComfyUI checkout. COMFY_PYTHON names its interpreter (default:
`<COMFYUI_DIR>/../comfyvenv/bin/python` when it exists, else this one). Runs tests/_vae_comfy_check.py in a
subprocess (about 20 s of CPU): the same random full-size weights, saved by `save_wan_vae` and loaded
through ComfyUI's `comfy.sd.VAE`, must give
- the same keys, shapes and values, and the same latent mean/std (`comfy.latent_formats.Wan21`);
- our full decode == ComfyUI's `VAE.decode`, our encode == ComfyUI's `VAE.encode`;
- ComfyUI's VAE streamed through `ComfyWanDecoder` (frame-wise, then 2 frames, the state saved and
  restored in between) == ComfyUI's `VAE.decode`, and == our decode.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")
TOL = 1e-5  # ComfyUI's CPU attention kernel differs from SDPA by float rounding only


def _python() -> str:
    if os.environ.get("COMFY_PYTHON"):
        return os.environ["COMFY_PYTHON"]
    venv = Path(COMFYUI_DIR).parent / "comfyvenv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@pytest.fixture(scope="module")
def result():
    script = Path(__file__).with_name("_vae_comfy_check.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([_python(), str(script)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_comfy_loads_our_file_with_the_same_layout(result):
    assert result["comfy_class"] == "comfy.ldm.wan.vae.WanVAE"
    assert result["keys_equal"] and result["shapes_equal"] and result["weights_equal"]
    assert result["mean_diff"] == 0.0 and result["std_diff"] == 0.0


def test_our_decode_and_encode_equal_comfys(result):
    assert result["decode_shape"][0] == result["decode_shape"][1] == [1, 9, 16, 16, 3]
    assert result["decode_scale"] > 0.05  # frames are not constant
    assert result["decode_diff"] <= TOL
    assert result["encode_shape"][0] == result["encode_shape"][1] == [1, 16, 2, 2, 2]
    assert result["encode_scale"] > 0.05
    assert result["encode_diff"] <= TOL


def test_comfy_vae_streams_like_its_full_decode(result):
    assert result["stream_frames"] == [1, 8]
    assert result["stream_vs_vae_decode"] <= TOL
    assert result["stream_vs_ours"] <= TOL


def test_image_to_video_encode_through_comfys_vae_gives_our_cache(result):
    """The image path of SF Image to Video (ComfyUI's VAE.encode, RGBA dropped to RGB) and our encoder give the
    same first latent frame and, committed into a tiny Wan session, the same KV-cache contents."""
    assert result["i2v_latent_shape"] == [1, 16, 1, 2, 2]
    assert result["i2v_latent_diff"] <= TOL and result["i2v_cache_diff"] <= 1e-4
    assert result["i2v_cache_scale"] > 0.01


def test_comfy_vae_streams_any_chunking_like_its_full_decode(result):
    """8 latent frames (29 video frames) streamed in chunkings other than the host's own (frame 0, then pairs),
    the state saved and restored between chunks: every one equals the host's `VAE.decode` (ComfyUI 0.27's decoder
    keeps only the last call's frames in its caches; fed frame by frame without the carried history it was off
    by up to 0.245)."""
    assert result["long_frames"] == 29 and result["long_scale"] > 0.05
    assert result["long_vs_ours"] <= TOL
    assert set(result["long_stream_vs_vae_decode"]) == {"3+3+2", "1+1+1+1+1+1+1+1", "1+2+2+2+1", "2+3+3", "8"}
    for sizes, diff in result["long_stream_vs_vae_decode"].items():
        assert diff <= TOL, (sizes, diff)
