// The frames of one video stream as they arrive. Chunks may finish loading out of order; frames become playable
// only as a contiguous prefix. Frame numbers are absolute (frame k of the stream); the buffer keeps at most
// `maxFrames` of them and drops the oldest first, so a live stream that never ends holds bounded memory (the
// strip image of a chunk is released once none of its frames is kept). A chunk whose strip failed to load
// still advances the stream (its frames are marked missing), and a chunk that never arrives stops holding the
// rest back once `maxPending` later chunks are waiting.

export class VideoBuffer {
  constructor({ maxFrames = Infinity, maxPending = 8 } = {}) {
    this.maxFrames = maxFrames;
    this.maxPending = maxPending;
    this.reset();
  }

  reset(stream = null, meta = {}) {
    this.stream = stream;
    this.meta = meta;
    this.pending = new Map(); // chunk index -> {startFrame, frames: [...]}
    this.frames = [];         // the kept contiguous frames: frames[i] is frame start + i
    this.start = 0;           // absolute number of the oldest kept frame
    this.nextChunk = Number.isInteger(meta.firstChunk) ? meta.firstChunk : 0; // the stream's first chunk index
    this.ended = false;
    this.status = null;
    this.expectedFrames = null;
    this.dropped = 0;         // frames dropped to stay within maxFrames
    this.missing = 0;         // frames whose strip did not load or whose chunk never came
  }

  /** Limit the kept frames (e.g. from a memory budget once the frame size is known). */
  setMaxFrames(n) {
    if (!(n >= 1)) throw new Error(`maxFrames must be >= 1, got ${n}`);
    this.maxFrames = Math.floor(n);
    this._trim();
  }

  /** Add a chunk's frames (events.stripFrames) with an opaque payload (the loaded strip image); a null payload
   *  marks the frames missing (the strip failed to load). Returns false for a stale or duplicate chunk. */
  add(chunk, frames, payload = null) {
    if (this.stream === null) this.reset(chunk.stream);
    if (chunk.stream !== this.stream) return false; // a stale chunk of an older run
    if (chunk.chunk < this.nextChunk || this.pending.has(chunk.chunk)) return false;
    const missing = payload === null;
    this.pending.set(chunk.chunk, { startFrame: chunk.startFrame,
                                    frames: frames.map((f) => ({ ...f, payload, missing })) });
    this._flush();
    if (this.pending.size > this.maxPending) this._skipGap();
    this._trim();
    return true;
  }

  _flush() {
    while (this.pending.has(this.nextChunk)) {
      const c = this.pending.get(this.nextChunk);
      for (const f of c.frames) {
        this.frames.push(f);
        if (f.missing) this.missing += 1;
      }
      this.pending.delete(this.nextChunk);
      this.nextChunk += 1;
    }
  }

  /** Give up on the chunk(s) holding the queue back: their frames count as missing. */
  _skipGap() {
    const first = Math.min(...this.pending.keys());
    const gap = Math.max(0, this.pending.get(first).startFrame - this.available);
    const kept = Math.min(gap, this.maxFrames);
    this.start += gap - kept; // frames that would be dropped at once are never stored
    this.dropped += gap - kept;
    for (let i = 0; i < kept; i++) this.frames.push({ index: this.available, payload: null, missing: true });
    this.missing += gap;
    this.nextChunk = first;
    this._flush();
  }

  _trim() {
    const over = this.frames.length - this.maxFrames;
    if (over > 0) {
      this.frames.splice(0, over);
      this.start += over;
      this.dropped += over;
    }
  }

  end(info) {
    if (info.stream !== this.stream) return;
    this.ended = true;
    this.status = info.status;
    this.expectedFrames = info.frames;
  }

  /** Absolute number of frames received contiguously (one past the newest playable frame). */
  get available() { return this.start + this.frames.length; }

  /** Frames kept in memory. */
  get retained() { return this.frames.length; }

  /** Frame k of the stream, or null if it was dropped or has not arrived. */
  frameAt(k) {
    const i = k - this.start;
    return i >= 0 && i < this.frames.length ? this.frames[i] : null;
  }

  /** Distinct payloads (strip images) still referenced by kept or pending frames. */
  payloads() {
    const s = new Set(this.frames.map((f) => f.payload));
    for (const c of this.pending.values()) for (const f of c.frames) s.add(f.payload);
    s.delete(null);
    return s;
  }

  /** The whole video is here: the stream ended and no chunk is still missing. */
  get complete() {
    return this.ended && this.pending.size === 0 &&
      (this.expectedFrames === null || this.available >= this.expectedFrames);
  }
}

/** How many frames of width x height fit a memory budget (decoded RGBA), within [minFrames, maxFrames]. */
export function framesForBudget(width, height, budgetBytes, { minFrames = 48, maxFrames = 4096 } = {}) {
  const per = Math.max(1, width * height * 4);
  return Math.max(minFrames, Math.min(maxFrames, Math.floor(budgetBytes / per)));
}
