// The frames of one video stream as they arrive: chunks may finish loading out of order, frames become playable
// only as a contiguous prefix. Every frame is kept, so the finished video can be replayed.

export class VideoBuffer {
  constructor() { this.reset(); }

  reset(stream = null, meta = {}) {
    this.stream = stream;
    this.meta = meta;
    this.chunks = new Map(); // chunk index -> {frames: [...], payload}
    this.frames = [];        // contiguous playable frames
    this.nextChunk = 0;
    this.ended = false;
    this.status = null;
    this.expectedFrames = null;
  }

  /** Add a loaded chunk (its frames from events.stripFrames, plus an opaque payload such as the image). */
  add(chunk, frames, payload = null) {
    if (this.stream === null) this.reset(chunk.stream);
    if (chunk.stream !== this.stream) return false; // a stale chunk of an older run
    if (chunk.chunk < this.nextChunk || this.chunks.has(chunk.chunk)) return false;
    this.chunks.set(chunk.chunk, {frames: frames.map((f) => ({...f, payload}))});
    while (this.chunks.has(this.nextChunk)) {
      this.frames.push(...this.chunks.get(this.nextChunk).frames);
      this.chunks.delete(this.nextChunk);
      this.nextChunk += 1;
    }
    return true;
  }

  end(info) {
    if (info.stream !== this.stream) return;
    this.ended = true;
    this.status = info.status;
    this.expectedFrames = info.frames;
  }

  get available() { return this.frames.length; }

  /** The whole video is here: the stream ended and no chunk is still missing. */
  get complete() {
    return this.ended && this.chunks.size === 0 && (this.expectedFrames === null || this.frames.length >= this.expectedFrames);
  }
}
