"""SF Toy Training Prompts with host stand-ins: the typed prompts become the same shards as
`encode-prompts --encoder toy`, and bad input is refused before anything is written."""
import pytest
import torch

from nodes_harness import install_stubs


def test_toy_prompts_match_the_cli_encoder(tmp_path):
    install_stubs(str(tmp_path / "comfy"))
    from nodes.toy_training import ToyTrainingPrompts
    from sf_core.toy.text import ToyTextEncoder
    from sf_core.train.data import ShardDataset

    text = "# smoke test\na red circle moving left\n\n  a blue square moving up fast  \n"
    out = ToyTrainingPrompts.execute(prompts=text, name="t")[0]
    ds = ShardDataset(out)
    assert len(ds) == 2 and ds[1].prompt == "a blue square moving up fast"
    want = ToyTextEncoder().encode(["a red circle moving left", "a blue square moving up fast"])
    for i in range(2):  # shards hold trimmed rows: compare the encoder's non-padding rows
        got = ds[i].embeds.float()
        assert torch.equal(got, want[i, :got.shape[0]]) and not want[i, got.shape[0]:].any()
    assert ds.text_dim == ToyTextEncoder().text_dim


@pytest.mark.parametrize("prompts,name,msg", [("\n# only a comment\n", "t", "at least one prompt"),
                                              ("a red circle", "../x", "plain folder name")])
def test_toy_prompts_refuse_bad_input(tmp_path, prompts, name, msg):
    install_stubs(str(tmp_path / "comfy"))
    from nodes.host import NodeInputError
    from nodes.toy_training import ToyTrainingPrompts

    with pytest.raises(NodeInputError, match=msg):
        ToyTrainingPrompts.execute(prompts=prompts, name=name)
    assert not (tmp_path / "comfy" / "output" / "self_forcing_training").exists()
