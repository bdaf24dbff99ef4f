"""Make tests/fixtures/vae_ref.safetensors from the *official* code (run by hand, not by pytest).

    python tests/_make_vae_fixtures.py --self-forcing /path/to/Self-Forcing --taehv /path/to/taehv

Both arguments are checkouts (or bare mirrors: the files are read with `git show HEAD:<path>`) of
guandeh17/Self-Forcing (`wan/modules/vae.py`) and madebyollin/taehv (`taehv.py`). Their code is imported
from a temporary directory and never copied into this repository. Weights are not stored: they are
regenerated from seeds by `sf_core.vae.tiny.random_state_dict` (the test checks per-tensor sums first).

Stored (all fp32): wan/z_raw [1,16,5,4,6] and wan/frames (official `decode` with scale mean=0, 1/std=1,
i.e. raw latents, clamped to [-1,1]); wan/video [1,3,9,32,48] and wan/mu (official `encode`, raw);
wan/wsum.<key>; taehv/z [1,16,4,3,5] and taehv/frames (official `decode_video(parallel=True)`, NTCHW in
[0,1]); taehv/wsum.<key>.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sf_core.vae.taehv import TAEHV  # noqa: E402
from sf_core.vae.tiny import random_state_dict  # noqa: E402
from sf_core.vae.wan_vae import WanVAE, WanVAEConfig  # noqa: E402

WAN_SEED, TAEHV_SEED = 1234, 4321


def _git_show(repo: str, path: str) -> tuple[str, str]:
    text = subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"], check=True, capture_output=True,
                          text=True).stdout
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    return text, commit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--self-forcing", required=True)
    ap.add_argument("--taehv", required=True)
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "vae_ref.safetensors"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    sf_src, sf_commit = _git_show(args.self_forcing, "wan/modules/vae.py")
    tae_src, tae_commit = _git_show(args.taehv, "taehv.py")
    (tmp / "official_wan_vae.py").write_text(sf_src)
    (tmp / "official_taehv.py").write_text(tae_src)
    sys.path.insert(0, str(tmp))
    import official_taehv  # noqa: E402
    import official_wan_vae  # noqa: E402

    out: dict[str, torch.Tensor] = {}
    cfg = WanVAEConfig.tiny()
    shapes = {k: v.shape for k, v in WanVAE(cfg).state_dict().items()}
    sd = random_state_dict(shapes, WAN_SEED)
    ref = official_wan_vae.WanVAE_(dim=cfg.dim, z_dim=16, dim_mult=list(cfg.dim_mult), num_res_blocks=2,
                                   attn_scales=[], temperal_downsample=list(cfg.temporal_downsample)).eval()
    ref.load_state_dict(sd)
    g = torch.Generator().manual_seed(7)
    zero, one = torch.zeros(16), torch.ones(16)
    with torch.no_grad():
        out["wan/z_raw"] = torch.randn(1, 16, 5, 4, 6, generator=g)
        out["wan/frames"] = ref.decode(out["wan/z_raw"], [zero, one]).clamp(-1, 1)
        out["wan/video"] = torch.rand(1, 3, 9, 32, 48, generator=g) * 2 - 1
        out["wan/mu"] = ref.encode(out["wan/video"], [zero, one])
    out.update({f"wan/wsum.{k}": v.double().sum().reshape(1) for k, v in sd.items()})

    tshapes = {k: v.shape for k, v in TAEHV().state_dict().items()}
    tsd = random_state_dict(tshapes, TAEHV_SEED)
    tref = official_taehv.TAEHV(checkpoint_path=None).eval()
    missing, _ = tref.load_state_dict(tsd, strict=False)
    assert not [k for k in missing if k.startswith("decoder.")], missing  # it also has an encoder
    with torch.no_grad():
        out["taehv/z"] = torch.randn(1, 16, 4, 3, 5, generator=g)
        out["taehv/frames"] = tref.decode_video(out["taehv/z"].permute(0, 2, 1, 3, 4), parallel=True,
                                                show_progress_bar=False).contiguous()
    out.update({f"taehv/wsum.{k}": v.double().sum().reshape(1) for k, v in tsd.items()})

    meta = {"self_forcing_commit": sf_commit, "taehv_commit": tae_commit, "wan_seed": WAN_SEED,
            "taehv_seed": TAEHV_SEED, "wan_config": cfg.to_dict(), "torch": torch.__version__}
    # "vae_meta_json", not "meta_json": tests/conftest.py treats files with "meta_json" as Self Forcing fixtures
    save_file({k: v.contiguous() for k, v in out.items()}, args.out, metadata={"vae_meta_json": json.dumps(meta)})
    print(f"wrote {args.out}: {len(out)} tensors, {Path(args.out).stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
