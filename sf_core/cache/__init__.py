"""The self-attention KV cache, an explicit object with a public lifecycle (`kv_cache.KVCache`: for_config,
append / commit, roll with sink frames, truncate, reset, to, state / from_state), its storage formats
(`kv_quant`: compute dtype, another float dtype, 8-bit codes with per-token/per-head scales) and the row
moves behind them (`kv_rows`: shift, re-rope, grow, re-encode). Importing loads nothing.
"""
