"""The causal Wan2.1 transformer: the module tree (`transformer.WanTransformer`, Wan2.1 state-dict names), its
forward as functions (`forward`: full sequence, block-causal, or cached chunk calls), attention backends and the
block-causal mask (`attention`), 3-D RoPE with absolute or re-based frame positions (`rope`), and the optional
accelerators of the cached forward (`accel`: torch.compile, CUDA-graph replay). Importing loads nothing.
"""
