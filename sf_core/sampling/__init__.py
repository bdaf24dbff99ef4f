"""Sampling: from noise to committed chunks.

The pieces, innermost first: `schedule` (the shifted flow-matching grid), `denoiser` (velocity -> x0, CFG),
`sampler` (few-step sampling as pure functions; `step_chunk` is the one chunk step), `rolling` (Rolling
Forcing's joint window, the second sampler), `prompts` (prompt schedules), `recache` (a prompt switch that
recomputes the cache), `context_frames` (given frames committed as context: image / video start),
`session` + `session_io` (everything needed to continue a video, and its file), `pipeline` (the loop over
chunk steps used by the CLI and the nodes) and `live` (a run steered between chunks until stopped).
Importing loads nothing.
"""
