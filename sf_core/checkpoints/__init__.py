"""Checkpoints: reading containers safely (`files`: safetensors, sharded, weights-only PyTorch), Wan2.1 key
names in every format we meet (`keymap`), loading and saving transformer weights against a `WanConfig`
(`weights`), LoRA files merged into them (`lora`), the causal families and how each is sampled (`families`),
one-file conversion (`convert`: python -m sf_core.checkpoints.convert) and optional Hub downloads (`hub`).
Importing loads nothing.
"""
