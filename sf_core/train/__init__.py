"""Self Forcing training (`python -m sf_core.train`): distributed DMD post-training of the causal Wan2.1
generator and its variants, launched by torchrun as its own process (never inside the ComfyUI server).

Modules: config (frozen run config; config_io reads files, checks types, applies overrides), data (prompt
embeddings, shards, sampler), models (nets, LoRA), distributed (process group, FSDP2 `parallelize`), rollout
(the inference sampler with training arguments), losses + methods (DMD, SiD, ODE regression, teacher /
diffusion forcing, flow matching), reward (T2V-Turbo mixed reward), ema, checkpoint (resumable DCP
checkpoints; dcp_safe loads them without running code from them), export, progress, trainer, launcher, cli.
Importing this package loads nothing heavy.
"""
