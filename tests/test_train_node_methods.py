"""SF Train Self Forcing's options for the new methods (host stand-ins): method cd and the long-rollout factor reach
the trainer's config, and the config the node writes trains."""
import pytest
import torch

from nodes_harness import install_stubs
from train_kit import write_embeddings, write_latents


@pytest.fixture()
def host(tmp_path):
    install_stubs(str(tmp_path / "comfy"))
    import folder_paths

    return __import__("pathlib").Path(folder_paths.get_input_directory())  # the node reads only ComfyUI's folders


def _build(host, **kw):
    from nodes.training import RANDOM_MODEL, build_config

    args = dict(method="dmd", embeddings_dir=str(host / "emb"), generator=RANDOM_MODEL, teacher=RANDOM_MODEL,
                critic=RANDOM_MODEL, max_steps=3, batch_size=1, config_file="", overrides="",
                run_dir=host / "run")
    args.update(kw)
    return build_config(**args)


def test_schema_offers_cd_and_the_long_rollout_factor(host):
    from nodes.training import TrainSelfForcing

    inputs = {i.id: i for i in TrainSelfForcing.define_schema().inputs}
    assert "cd" in inputs["method"].opts["options"]
    factor = inputs["long_rollout_factor"]
    assert factor.optional and factor.opts["default"] == 1 and factor.opts["min"] == 1
    assert "Self-Forcing++" in factor.tooltip


def test_node_configs_for_long_rollouts_and_cd_train(host):
    from sf_core.train.config import TrainConfig
    from sf_core.train.distributed import init_distributed, shutdown
    from sf_core.train.trainer import Trainer

    write_embeddings(host / "emb")
    write_latents(host / "lat")
    d = _build(host, long_rollout_factor=3)
    assert d["method"] == "dmd" and d["long_rollout"]["factor"] == 3 and d["data"]["embeddings"] == str(host / "emb")
    assert _build(host)["long_rollout"]["factor"] == 1
    cd = _build(host, method="cd", embeddings_dir=str(host / "lat"),
                overrides="consistency.steps=8\nlora.rank=2\nema.start_step=0")
    assert cd["data"]["latents"] == str(host / "lat") and cd["consistency"]["steps"] == 8
    with pytest.raises(Exception, match="long_rollout.factor=2 applies to the self-rollout methods"):
        _build(host, method="cd", embeddings_dir=str(host / "lat"), long_rollout_factor=2)
    info = init_distributed(TrainConfig.from_dict(d).dist)
    try:
        for conf in (d, cd):
            tr = Trainer(TrainConfig.from_dict(conf), info)
            logs = tr.train_step()
            assert torch.isfinite(torch.tensor(logs["generator_loss"]))
            assert ("window_start" in logs) == (conf is d)
    finally:
        shutdown()
