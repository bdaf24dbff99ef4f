// The live stream's control surface without the DOM: the control requests (POST /selfforcing/live/control,
// docs/comfyui.md) and what the player shows about the stream (state, prompt in effect, a requested prompt
// waiting for the next chunk, the live indicator). js/lib/player.js wires it to buttons and events.

export const ACTIONS = ["prompt", "pause", "resume", "stop", "reset"];
export const MAX_BLEND_CHUNKS = 64;

/** The JSON body of a control request; throws an Error saying what to change when the input is not usable. */
export function controlBody(stream, action, { text = "", blendChunks = 0 } = {}) {
  if (typeof stream !== "string" || stream === "") throw new Error("no live stream to control (start one first)");
  if (!ACTIONS.includes(action)) throw new Error(`unknown action ${JSON.stringify(action)}: use ${ACTIONS.join(", ")}`);
  const body = { stream, action };
  if (action === "prompt") {
    const t = String(text ?? "").trim();
    if (!t) throw new Error("type a prompt first (Enter switches at the next chunk)");
    const k = Number(blendChunks);
    if (!Number.isInteger(k) || k < 0 || k > MAX_BLEND_CHUNKS) {
      throw new Error(`blend over 0..${MAX_BLEND_CHUNKS} chunks, got ${blendChunks}`);
    }
    body.text = t;
    body.blend_chunks = k;
  }
  return body;
}

/** The error text of a failed control response ({error} from the server, or the HTTP status). */
export function responseError(status, body) {
  if (status >= 200 && status < 300) return null;
  const msg = body && typeof body.error === "string" ? body.error : `HTTP ${status}`;
  return status === 404 ? `the stream is gone: ${msg}` : msg;
}

/** What the player knows about one live stream, from its events and the requests it sent. */
export class LiveTracker {
  constructor(stream = null, prompt = null) {
    this.stream = stream;
    this.state = stream ? "running" : "idle"; // running | paused | stopping | stopped | idle
    this.prompt = prompt;          // in effect for the newest chunk
    this.requested = null;         // {text, blendChunks, atChunk}: sent, not yet seen in a chunk
    this.chunk = null;             // newest chunk number
    this.genFps = null;
    this.chunkSeconds = null;
    this.error = null;             // the last refused action or failed request
    this.switches = [];            // [{chunk, text}] prompt changes seen in chunks (bounded)
  }

  get controllable() { return this.stream !== null && (this.state === "running" || this.state === "paused"); }

  sent(action, body) {
    this.error = null;
    if (action === "prompt") this.requested = { text: body.text, blendChunks: body.blend_chunks, atChunk: this.chunk };
    if (action === "stop") this.state = "stopping";
  }

  failed(message) { this.error = message; }

  onChunk(c) {
    if (c.stream !== this.stream) return;
    this.chunk = c.chunk;
    if (c.genFps !== null) this.genFps = c.genFps;
    if (c.chunkSeconds !== null) this.chunkSeconds = c.chunkSeconds;
    if (c.prompt !== null && c.prompt !== this.prompt) {
      this.switches.push({ chunk: c.chunk, text: c.prompt });
      if (this.switches.length > 32) this.switches.shift();
      this.prompt = c.prompt;
    }
    for (const a of c.actions) {
      if (!a.ok) this.error = `${a.action} refused: ${a.error ?? "no reason given"}`;
      if (a.action === "prompt" && this.requested && a.text === this.requested.text) this.requested = null;
      if (a.action === "reset" && a.ok) this.switches.push({ chunk: c.chunk, text: "(reset)" });
    }
    if (this.requested && c.prompt === this.requested.text) this.requested = null;
    if (this.state === "paused") this.state = "running"; // a chunk means it runs
  }

  onState(s) {
    if (s.stream !== this.stream) return;
    this.state = s.state;
    if (s.prompt !== null) this.prompt = s.prompt;
    if (s.chunk !== null && s.chunk > 0) this.chunk = Math.max(this.chunk ?? 0, s.chunk - 1); // chunks made so far
  }

  onEnd(e) {
    if (e.stream === this.stream) this.state = "stopped";
  }

  /** "LIVE · chunk 12 · gen 14.2 fps · 0.8 s behind" (or PAUSED / STOPPING / ENDED): generated video frames per
   *  second of wall time, and how far the picture on screen is behind the newest frame. */
  indicator(behindSeconds = null) {
    const head = { running: "LIVE", paused: "PAUSED", stopping: "STOPPING", stopped: "ENDED", idle: "" }[this.state];
    const parts = [head];
    if (this.chunk !== null) parts.push(`chunk ${this.chunk + 1}`);
    if (this.genFps !== null && this.state !== "stopped") parts.push(`gen ${this.genFps.toFixed(1)} fps`);
    if (behindSeconds !== null && this.state !== "stopped") parts.push(`${behindSeconds.toFixed(1)} s behind`);
    return parts.filter(Boolean).join(" · ");
  }

  /** The line under the prompt box: the requested switch while it waits, else the prompt in effect. */
  promptLine() {
    if (this.requested) {
      const how = this.requested.blendChunks > 0 ? `blending over ${this.requested.blendChunks} chunks` : "re-cache";
      return `next chunk: "${this.requested.text}" (${how})`;
    }
    return this.prompt ? `now: "${this.prompt}"` : "";
  }
}
