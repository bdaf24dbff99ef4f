"""The optional umT5 text encoder (`sf_core.text`) on a tiny random UMT5 with a tiny word-level tokenizer."""
import sys

import pytest
import torch


WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "square", "cat", "moving", "left", "fast", "dog", "blue"]


def make_tiny_umt5(folder, d_model=32, seed=0):
    """A Hugging Face folder: tiny UMT5 encoder weights + config + a word-level tokenizer with an end token."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                               unk_token="<unk>").save_pretrained(folder)
    cfg = tf.UMT5Config(vocab_size=len(WORDS), d_model=d_model, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    tf.UMT5EncoderModel(cfg).save_pretrained(folder)
    return folder


# Hugging Face -> Wan2.1 T5 names, written out from Wan's module layout (wan/modules/t5.py) for the test.
def _to_wan(sd):
    out = {"token_embedding.weight": sd["shared.weight"], "norm.weight": sd["encoder.final_layer_norm.weight"]}
    for k, v in sd.items():
        if not k.startswith("encoder.block."):
            continue
        i = k.split(".")[2]
        tail = k.split(".", 3)[3]
        wan = {"layer.0.layer_norm.weight": "norm1.weight", "layer.1.layer_norm.weight": "norm2.weight",
               "layer.0.SelfAttention.relative_attention_bias.weight": "pos_embedding.embedding.weight",
               "layer.1.DenseReluDense.wi_0.weight": "ffn.gate.0.weight",
               "layer.1.DenseReluDense.wi_1.weight": "ffn.fc1.weight",
               "layer.1.DenseReluDense.wo.weight": "ffn.fc2.weight"}.get(tail)
        if wan is None:
            wan = "attn." + tail.split(".")[-2] + ".weight"  # SelfAttention.{q,k,v,o}
        out[f"blocks.{i}.{wan}"] = v
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    pytest.importorskip("transformers")
    return make_tiny_umt5(tmp_path_factory.mktemp("umt5") / "hf")


def test_encode_pads_with_zeros_and_batching_does_not_change_a_prompt(folder):
    from sf_core.text import load_umt5

    enc = load_umt5(folder, dtype=torch.float32)
    both = enc.encode(["a  red square", "a blue dog moving left fast"])
    assert both.shape == (2, 7, 32)
    assert both[0, 4:].abs().max() == 0 and both[0, :4].abs().min() > 0  # 3 words + end token, then padding
    alone = enc.encode("a red square")
    assert alone.shape == (1, 4, 32)
    assert torch.allclose(alone[0], both[0, :4], atol=1e-6)


def test_single_files_hf_names_and_wan_names_load_the_same_encoder(folder, tmp_path):
    from safetensors.torch import load_file, save_file

    from sf_core.text import load_umt5

    ref = load_umt5(folder, dtype=torch.float32).encode(["a red cat", "fast dog"])
    sd = load_file(str(next(folder.glob("*.safetensors"))))
    sd.pop("encoder.embed_tokens.weight", None)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "umt5.safetensors"))
    torch.save(_to_wan(sd), tmp_path / "models_t5.pth")
    for f in ("umt5.safetensors", "models_t5.pth"):
        got = load_umt5(tmp_path / f, tokenizer=folder, dtype=torch.float32).encode(["a red cat", "fast dog"])
        assert torch.allclose(got, ref, atol=1e-6), f


def test_clear_errors(folder, tmp_path, monkeypatch):
    from sf_core.text import TextEncoderError, load_umt5

    with pytest.raises(TextEncoderError, match="does not exist"):
        load_umt5(tmp_path / "nope")
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(TextEncoderError, match="no umT5 tokenizer"):
        load_umt5(tmp_path / "w.safetensors")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(TextEncoderError, match="pip install transformers"):
        load_umt5(folder)
