"""SF Causal Sampler: Self Forcing few-step causal generation on a stock MODEL.

The MODEL is the host's (UNETLoader or SF Load Self Forcing Checkpoint): its WanModel modules run the causal
KV-cache forward of sf_core, so LoRA, fp8 weights and the host's memory management keep working. LATENTs in
and out are raw VAE latents (the host convention); sampling happens in the model's normalised space.
"""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from sf_core.cache.kv_quant import KV_DTYPES
from sf_core.sampling.session import SamplingSettings, new_session

from . import host, types
from .decoders import pick_decoder
from .inputs import (DEFAULT_SHIFT, DEFAULT_TIMESTEPS, batch_context, causal_config, check_length,
                     conditioning_tensor, latent_shape, parse_timesteps, resolve_shift)
from .prompts import schedule_for
from .runner import RunOutput, run, session_to
from .streaming import LiveStream

log = logging.getLogger("selfforcing.nodes")

MAX_SEED = 2**63 - 1


def text_dim_of(module) -> int:
    return int(module.text_embedding[0].weight.shape[1])


def frames_output(images: torch.Tensor | None):
    """IMAGE [N, H, W, 3] (batch-major, like VAEDecode) or a blocker that explains what to connect."""
    if images is None:
        from comfy_execution.graph_utils import ExecutionBlocker

        return ExecutionBlocker("the 'frames' output of the Self Forcing sampler needs a VAE connected to its "
                                "'vae' input (or decode the LATENT with SF Streaming VAE Decode)")
    return images.reshape(-1, *images.shape[2:])


def run_node(loaded, session, node_id, source: str, num_chunks: int, vae, preview_decoder, fps: float,
             live_preview: bool):
    """Run the chunks on the compute device; returns (raw LATENT dict, CPU session, frames output)."""
    vae_dec = pick_decoder(vae=vae)
    prev_dec = pick_decoder(decoder=preview_decoder)
    live = LiveStream(node_id, source, fps, num_chunks, enabled=bool(live_preview)) \
        if (vae_dec or prev_dec) else None
    status = "error"
    try:
        out: RunOutput = run(loaded.module, session, num_chunks=num_chunks, vae=vae_dec, preview=prev_dec, live=live,
                             node_id=node_id)
        status = "done"
    except BaseException as e:
        status = "interrupted" if type(e).__name__ == "InterruptProcessingException" else "error"
        raise
    finally:
        if live is not None:
            live.end(status)
        if status != "done":
            session.cache = None  # drop the device cache before returning memory to the host
            host.free_memory()
    cpu = host.intermediate_device()
    raw = host.latent_out(loaded.base, out.latents).to(cpu)
    kept = session_to(session, cpu)
    session.cache = None
    return {"samples": raw}, kept, frames_output(out.images)


def kv_dtype_input():
    """The KV-cache storage widget (last in the node: workflows saved before it keep their widget values)."""
    return io.Combo.Input("kv_cache_dtype", options=list(KV_DTYPES), default="auto", optional=True,
                          tooltip="How the KV cache is stored: auto = the model's compute dtype (exact). int8 / fp8 "
                                  "halve its memory (a 1.3B model at 832x480 with a 21-frame window: ~6 GB in "
                                  "bf16, ~3 GB in int8) for a small loss of accuracy; fp32 / bf16 / fp16 store "
                                  "that float type. A continued session keeps the storage it was made with.")


def merge_commit_input():
    """Merged commits (last in the node: workflows saved before it keep their widget values)."""
    return io.Boolean.Input("merge_commit", default=False, optional=True,
                            tooltip="Commit each chunk inside the next chunk's first denoising call (one forward over "
                                    "both chunks): 4 forward calls per chunk instead of 5 at 4 steps, the same video "
                                    "within float rounding (with an 8-bit or other-float KV cache: within that "
                                    "storage's error). Off = exactly the official order. Ignored by samplers that "
                                    "denoise a window jointly (Rolling Forcing); a continued session keeps its own.")


def family_input():
    from .loaders import family_options

    return io.Combo.Input("family", options=["custom", *family_options()], default="auto", optional=True,
                          tooltip="Checkpoint family whose sampling defaults to use (auto: the one SF Load Self "
                                  "Forcing Checkpoint recorded on the MODEL, else the widgets). Widgets moved off "
                                  "their defaults still win; custom: the widgets exactly.")


def family_settings(family, model, settings: SamplingSettings, *, shift_widget: float, **frames) -> SamplingSettings:
    """The family preset with the widgets that were moved off their defaults on top (the settings unchanged for
    'custom', or for 'auto' on a MODEL that records no family)."""
    import dataclasses

    from sf_core.config import ConfigError
    from sf_core.checkpoints.families import from_widgets

    from .loaders import model_family

    name = model_family(model) if family in (None, "auto") else (None if family == "custom" else family)
    if not name:
        return settings
    values = dict(steps=settings.steps, warp=settings.warp, shift=settings.shift, **frames)
    defaults = dict(steps=parse_timesteps(DEFAULT_TIMESTEPS), warp=True, shift=DEFAULT_SHIFT, chunk_frames=3,
                    window_frames=21, sink_frames=3)
    if shift_widget == 0:
        defaults["shift"] = settings.shift  # 0 = the MODEL's shift: only a choice if the MODEL sets one
    try:
        fam = from_widgets(name, values, defaults)
    except ConfigError as e:
        raise host.NodeInputError(f"family {name}: {e}") from None
    return dataclasses.replace(fam, kv_dtype=settings.kv_dtype, merge_commit=settings.merge_commit and
                               fam.sampler == "chunk" and not fam.context_renoise)


def sampling_inputs(*, window_default: int = 21, window_min: int = 0, sink: bool = True) -> list:
    """Seed and the few-step causal sampling widgets, shared by the sampler, live, image and extend nodes."""
    window_tip = ("Rolling KV-cache window in latent frames, sink included (21 = the length Self Forcing was trained "
                  "on: nothing is evicted up to 81 video frames, and memory stays fixed for longer videos).")
    window_tip += " 0 = keep every frame." if window_min == 0 else " Rounded down to the sink + whole chunks."
    out = [
        io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                     tooltip="Noise seed; the same seed gives the same video."),
        io.String.Input("timesteps", default=DEFAULT_TIMESTEPS,
                        tooltip="Denoising steps per chunk, decreasing integers in 1..1000 separated by commas (Self "
                                "Forcing: 1000,750,500,250)."),
        io.Boolean.Input("warp_timesteps", default=True,
                         tooltip="Map the steps onto the shifted schedule as Self Forcing does (1000,750,500,250 -> "
                                 "1000,937.5,833.3,625). Keep on for Self Forcing checkpoints."),
        io.Float.Input("shift", default=DEFAULT_SHIFT, min=0.0, max=100.0, step=0.1,
                       tooltip="Flow shift of the schedule (Self Forcing: 5). 0 = use the MODEL's shift, e.g. from a "
                               "ModelSamplingSD3 node."),
        io.Int.Input("chunk_frames", default=3, min=1, max=64,
                     tooltip="Latent frames generated together per chunk (3 = chunk-wise Self Forcing, 1 = frame-wise "
                             "models)."),
        io.Int.Input("window_frames", default=window_default, min=window_min, max=1024, tooltip=window_tip),
    ]
    if sink:
        out.append(io.Int.Input("sink_frames", default=3, min=0, max=64,
                                tooltip="First frames never evicted from the rolling window (attention sink: keeps "
                                        "long videos on topic; 3 = the first chunk). Ignored when window_frames is 0."))
    return out


def common_inputs() -> list:
    return [
        io.Vae.Input("vae", optional=True,
                     tooltip="Wan2.1 VAE: decode each chunk as soon as it is generated (seamless causal decode), "
                             "stream it to the live player and return the frames on the 'frames' output."),
        types.Decoder.Input("preview_decoder", optional=True,
                            tooltip="Fast preview decoder (SF Load Preview Decoder, e.g. TAEHV) for the live "
                                    "player; the VAE, if connected, still produces the final frames."),
        io.Float.Input("fps", default=16.0, min=1.0, max=60.0, step=1.0,
                       tooltip="Playback rate of the live player (Wan2.1 videos are 16 fps)."),
        io.Boolean.Input("live_preview", default=True,
                         tooltip="Send each decoded chunk to the browser while generating (needs a VAE or a "
                                 "preview decoder)."),
    ]


class CausalSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SF_CausalSampler",
            display_name="SF Causal Sampler (Self Forcing)",
            category=types.CATEGORY,
            description="Self Forcing: generate a video chunk by chunk with a KV cache (few-step causal sampling). "
                        "Outputs a LATENT for VAEDecode / SF Streaming VAE Decode and a session to continue the "
                        "video later.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan2.1 T2V MODEL trained with Self Forcing (Load Diffusion "
                                                "Model, or SF Load Self Forcing Checkpoint)."),
                io.Conditioning.Input("positive", tooltip="The prompt: CLIPTextEncode with a CLIPLoader of type "
                                                          "'wan' (umT5-XXL), or SF Load Conditioning."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional empty video latent (EmptyHunyuanLatentVideo) giving size, length and "
                                        "batch; if not connected, width/height/length/batch_size are used."),
                io.Int.Input("width", default=832, min=16, max=4096, step=16,
                             tooltip="Video width in pixels (used when no latent is connected)."),
                io.Int.Input("height", default=480, min=16, max=4096, step=16,
                             tooltip="Video height in pixels (used when no latent is connected)."),
                io.Int.Input("length", default=81, min=1, max=4093, step=4,
                             tooltip="Video frames (4k+1; 81 = 21 latent frames = 7 chunks). Used when no latent "
                                     "is connected. Longer videos need a rolling window (window_frames)."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Videos generated together (used when no latent is connected)."),
                *sampling_inputs(),
                types.PromptSchedule.Input("prompt_schedule", optional=True,
                                           tooltip="Prompt changes over time (SF Prompt Schedule). Chunks before "
                                                   "its first entry use 'positive'."),
                *common_inputs(),
                kv_dtype_input(),
                family_input(),
                merge_commit_input(),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="Raw video latent [B,16,T,H/8,W/8] for VAEDecode "
                                                                "or SF Streaming VAE Decode."),
                types.Session.Output(display_name="session", tooltip="Continue this video later (SF Continue "
                                                                     "Session, SF Save Session)."),
                io.Image.Output(display_name="frames", tooltip="The frames decoded during sampling (needs 'vae')."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, timesteps):
        """Queue-time check of the one input the schema cannot range-check (the timesteps text).

        ComfyUI reads this signature: it skips its own min/max checks for every input named here (all of them
        with **kwargs) and repeats an error once per named input, so only `timesteps` is named; the other
        inputs keep the schema's ranges, and their combination (window vs chunk) is checked first in execute.
        A linked input arrives as None here and is checked at execution.
        """
        if timesteps is None:
            return True
        try:
            parse_timesteps(timesteps)
        except host.NodeInputError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, model, positive, width, height, length, batch_size, seed, timesteps, warp_timesteps, shift,
                chunk_frames, window_frames, sink_frames, fps, live_preview, latent=None, prompt_schedule=None,
                vae=None, preview_decoder=None, kv_cache_dtype="auto", family="auto",
                merge_commit=False) -> io.NodeOutput:
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        causal = causal_config(chunk_frames, window_frames, sink_frames)
        settings = SamplingSettings(steps=parse_timesteps(timesteps), shift=resolve_shift(shift, host.model_shift(model)),
                                    warp=bool(warp_timesteps), causal=causal, kv_dtype=kv_cache_dtype or "auto",
                                    merge_commit=bool(merge_commit))
        settings = family_settings(family, model, settings, shift_widget=shift, chunk_frames=chunk_frames,
                                   window_frames=window_frames, sink_frames=sink_frames)
        causal = settings.causal
        dm = host.wan_module_of(model)
        b, _, frames, h, w = latent_shape(latent, width, height, length, batch_size,
                                          int(dm.patch_embedding.weight.shape[1]))
        check_length(frames, causal, int(getattr(getattr(model, "model", None), "sf_temporal_scale", 4)))
        positive_ctx = batch_context(conditioning_tensor(positive, text_dim_of(dm)), b).detach()
        prompts = schedule_for(positive_ctx, prompt_schedule)
        for name, sched in (("positive", schedule_for(positive_ctx, None)), ("prompt_schedule", prompts)):
            try:  # the error names the input that holds the bad conditioning
                sched.check(text_dim_of(dm), b)
            except ValueError as e:
                raise host.NodeInputError(f"{name}: {e}") from None
        loaded = host.load_wan(model)
        session = new_session(loaded.module, prompts, latent_hw=(h, w), batch=b, seed=int(seed), settings=settings,
                              dtype=loaded.dtype, device=loaded.device)
        n_chunks = len(causal.chunk_bounds(frames))
        for e in prompts.entries:
            if e.start_chunk >= n_chunks:
                log.warning("prompt_schedule: the prompt from chunk %d comes after the last chunk (%d) of this video: "
                            "not used here, kept in the session output for SF Continue Session", e.start_chunk,
                            n_chunks - 1)
        latent_out, kept, images = run_node(loaded, session, node_id, "sampler", n_chunks, vae, preview_decoder,
                                            fps, live_preview)
        return io.NodeOutput(latent_out, kept, images)
