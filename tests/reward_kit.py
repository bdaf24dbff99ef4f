"""Tiny random CLIP / X-CLIP checkpoints in the transformers format (save_pretrained into a folder), with a byte-level
CLIP tokenizer (256 byte symbols + their end-of-word forms, no merges): what the built-in rewards load."""
from __future__ import annotations

from pathlib import Path

import torch

BOS, EOS = 512, 513
TEXT = dict(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=32, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=16,
              patch_size=8)


def _tokenizer():
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + len(chars) for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = BOS, EOS
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_clip(folder: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16))
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder


def tiny_xclip(folder: Path, seed: int = 0, frames: int = 4) -> Path:
    from transformers import XCLIPConfig, XCLIPModel

    torch.manual_seed(seed)
    vision = {**VISION, "num_frames": frames, "mit_hidden_size": 16, "mit_intermediate_size": 32,
              "mit_num_hidden_layers": 1, "mit_num_attention_heads": 2}
    model = XCLIPModel(XCLIPConfig(text_config=TEXT, vision_config=vision, projection_dim=16, prompt_layers=1,
                                   prompt_attention_heads=2, prompt_num_attention_heads=2))
    model.save_pretrained(folder)
    _tokenizer().save_pretrained(folder)
    return folder
