"""sf_core: the host-independent torch core of the Self Forcing pack.

Causal Wan2.1 transformer (`model`, `forward`), KV cache (`kv_cache`), schedule and denoiser, few-step
causal sampler (`sampler`), checkpoints, streaming VAE decode and training. It never imports ComfyUI.
"""
__version__ = "0.1.0"
