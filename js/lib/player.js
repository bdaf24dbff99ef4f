// The player widget of one node: a screen (canvas for streamed chunks, <video> for a finished live file), a
// transport row (play/pause, position, FPS), and for live streams a control panel (prompt box, switch mode,
// pause/resume, stop, reset) with a live indicator. Host access comes in through `host` ({apiURL, post}), so
// this file has no ComfyUI import; js/self_forcing_player.js creates one per node and feeds it the events.
import { stripFrames, viewPath } from "./events.js";
import { VideoBuffer, framesForBudget } from "./frame_queue.js";
import { LiveTracker, controlBody, responseError } from "./live_controls.js";
import { Pacer } from "./pacing.js";
import { buildView, el, fmt, setIcon } from "./player_view.js";

export const BUDGET_BYTES = 384 * 1024 * 1024; // decoded frames kept per player (RGBA)
export const MIN_HEIGHT = 200;                  // the widget at the node's default size (workflow_layout.py)
export const LIVE_MIN_HEIGHT = 290;
export const OFF_HEIGHT = 20;
const SAVED_CHUNKS = 64;                        // chunk strips remembered for a cached rerun / a reload

export class Player {
  constructor(node, host, { live = false } = {}) {
    this.node = node;
    this.host = host;
    this.liveNode = live;
    this.buffer = new VideoBuffer();
    this.pacer = new Pacer(16, { prebuffer: 4, loop: true });
    this.tracker = new LiveTracker();
    this.playing = true;
    this.userFps = false;
    this.raf = null;
    this.info = null;      // the current stream's start info
    this.endInfo = null;
    this.saved = null;     // what node.properties remembers of the last stream
    this.build();
  }

  build() {
    buildView(this);
    this.renderLive();
    this.syncMinHeight();
  }

  /** The minimum height on the element itself: the Vue node renderer (frontend 1.58's Nodes 2.0) lays DOM
   * widgets out by their CSS and never asks getMinHeight, so without it the picture shrank to ~45 px. */
  syncMinHeight() {
    this.root.style.minHeight = `${this.minHeight}px`;
  }

  get minHeight() {
    if (this.off) return OFF_HEIGHT;
    return this.liveNode || this.info?.live ? LIVE_MIN_HEIGHT : MIN_HEIGHT;
  }

  /** The node's live_preview widget: off folds the player to its status line (nothing will stream). */
  setLivePreview(on) {
    this.off = !on && !this.info;
    this.root.classList.toggle("sf-off", this.off);
    this.syncMinHeight();
    if (this.off) this.setStatus("live preview off: turn it on to watch the chunks here while they are made");
    else if (this.status.textContent.startsWith("live preview off")) this.setStatus("");
  }

  /** The node's fps widget: the playback rate until a stream says otherwise or the user sets one. */
  setDefaultFps(fps) {
    if (!(fps > 0) || this.userFps || this.info) return;
    this.pacer.setFps(fps);
    this.fpsInput.value = String(fps);
  }

  /** An `executed` message (also sent for a cached node): a finished file in it can be shown in a fresh page. */
  executed(output) {
    const f = output?.images?.find?.((i) => typeof i?.filename === "string" && /\.(mp4|webm)$/i.test(i.filename));
    if (f && !this.info) {
      this.restore({ stream: `file:${f.filename}`, fps: this.pacer.fps, live: false, chunks: [],
                     file: { filename: f.filename, subfolder: f.subfolder ?? "", type: f.type ?? "output" } });
    }
  }

  /** The player shows a video of its own (so the node's preview image would only repeat it). */
  get hasVideo() { return this.info !== null || this.saved !== null; }

  setStatus(text, error = false) {
    this.status.textContent = text;
    this.status.classList.toggle("sf-error", error);
  }

  // ------------------------------------------------------------------------------------------ stream events
  start(info) {
    if (this.off) this.setLivePreview(true);
    this.info = info;
    this.syncMinHeight();
    this.streamedThisRun = true;
    this.endInfo = null;
    this.useVideo(null);
    this.buffer = new VideoBuffer();
    this.buffer.reset(info.stream, info);
    if (info.width && info.height) this.buffer.setMaxFrames(framesForBudget(info.width, info.height, BUDGET_BYTES));
    this.pacer.restart();
    this.pacer.maxLag = null;
    if (!this.userFps) {
      this.pacer.setFps(info.fps);
      this.fpsInput.value = String(info.fps);
    }
    this.tracker = info.live ? new LiveTracker(info.stream, info.prompt) : new LiveTracker();
    if (info.live) this.livePanel.hidden = false;
    this.saved = { stream: info.stream, fps: info.fps, live: info.live, chunks: [], file: null };
    this.placeholder.hidden = true;
    this.setStatus(info.live ? "live: waiting for the first chunk" : `generating (${info.source})`);
    this.renderLive();
    this.schedule();
  }

  addChunk(chunk) {
    if (this.info === null || this.buffer.stream !== chunk.stream) {
      this.start({ stream: chunk.stream, node: chunk.node, source: chunk.source, fps: chunk.fps,
                   totalChunks: chunk.totalChunks, width: chunk.width, height: chunk.height, live: chunk.live,
                   prompt: chunk.prompt, controlsUrl: "/selfforcing/live/control" });
    }
    if (this.buffer.maxFrames === Infinity) {
      this.buffer.setMaxFrames(framesForBudget(chunk.width, chunk.height, BUDGET_BYTES));
    }
    if (chunk.live) this.pacer.maxLag = Math.max(2 * chunk.frames, Math.round(this.pacer.fps)); // stay near live
    this.tracker.onChunk(chunk);
    this.remember(chunk);
    this.loadStrip(chunk, () => {
      const total = chunk.totalChunks ? `/${chunk.totalChunks}` : "";
      if (!this.endInfo) {
        this.setStatus(chunk.live ? `streaming · ${this.buffer.available} frames received`
          : `chunk ${chunk.chunk + 1}${total} · ${this.buffer.available} frames` +
            (chunk.elapsed !== null ? ` · ${chunk.elapsed.toFixed(1)} s` : ""));
      }
    });
    this.renderLive();
  }

  loadStrip(chunk, done) {
    const img = new Image();
    const finish = (payload) => {
      this.buffer.add(chunk, stripFrames(chunk), payload);
      if (this.canvas.width !== chunk.width || this.canvas.height !== chunk.height) {
        this.canvas.width = chunk.width;
        this.canvas.height = chunk.height;
      }
      done?.(payload !== null);
      this.schedule();
    };
    img.onload = () => finish(img);
    img.onerror = () => finish(null); // a lost strip must not stall the stream
    img.src = this.host.apiURL(viewPath(chunk.image));
  }

  remember(chunk) {
    if (!this.saved) return;
    this.saved.chunks.push({ chunk: chunk.chunk, startFrame: chunk.startFrame, frames: chunk.frames,
                             width: chunk.width, height: chunk.height, image: chunk.image });
    if (this.saved.chunks.length > SAVED_CHUNKS) this.saved.chunks.shift();
    this.persist();
  }

  liveState(s) {
    this.tracker.onState(s);
    this.renderLive();
    this.schedule();
  }

  end(info) {
    if (info.stream !== this.buffer.stream) return;
    this.buffer.end(info);
    this.endInfo = info;
    this.tracker.onEnd(info);
    const frames = info.frames ?? this.buffer.available;
    const took = info.elapsed !== null ? ` in ${info.elapsed.toFixed(1)} s` : "";
    this.setStatus(info.status === "done" || info.status === "stopped"
      ? `${info.status} · ${frames} frames${took}${info.file ? ` · ${info.file.filename}` : ""}`
      : `${info.status} after ${frames} frames`, info.status === "error");
    if (info.file) {
      if (this.saved) this.saved.file = info.file;
      this.useVideo(info.file);
    }
    this.persist();
    this.renderLive();
    this.schedule();
  }

  // ------------------------------------------------------------------------------------------ run status
  running() {
    this.streamedThisRun = false;
    if (!this.info || this.endInfo) this.setStatus("running…");
  }

  cached() {
    if (this.off) return this.setStatus("cached (live preview off)");
    if (!this.info && this.saved) this.restore(this.saved);
    this.setStatus(this.info ? "cached: the inputs did not change, showing the last result"
      : "cached: made before this page was opened; change an input to generate again");
  }

  finishedWithoutStream() {
    if (this.streamedThisRun) return;
    this.setStatus(this.info ? "done: live preview off, the video shown is an earlier one"
      : "done: live preview off, nothing streamed");
  }

  // ------------------------------------------------------------------------------------------ saved result
  persist() {
    if (this.node.properties && this.saved) this.node.properties.selfforcing_last = this.saved;
  }

  /** Show a remembered stream (node.properties after a reload, or a cached rerun) from its strips / file. */
  restore(saved) {
    if (!saved || !Array.isArray(saved.chunks) || (!saved.chunks.length && !saved.file)) return;
    const first = saved.chunks[0];
    this.start({ stream: saved.stream, node: "", source: "saved", fps: saved.fps || this.pacer.fps,
                 totalChunks: null, width: first?.width ?? null, height: first?.height ?? null, live: false,
                 prompt: null });
    this.setLivePreview(true);
    this.saved = saved;
    const gone = () => { // the server was restarted since (its temp folder is emptied): forget it
      this.info = null;
      this.saved = null;
      delete this.node.properties?.selfforcing_last;
      this.useVideo(null);
      this.placeholder.hidden = false;
      this.setStatus("");
    };
    if (saved.file) {
      this.useVideo(saved.file);
      this.video.onerror = gone;
    } else {
      this.buffer.nextChunk = first.chunk;
      this.buffer.start = first.startFrame;
      let failed = 0;
      for (const c of saved.chunks) {
        this.loadStrip({ ...c, stream: saved.stream }, (ok) => {
          failed += ok ? 0 : 1;
          if (failed === saved.chunks.length && this.saved === saved) gone();
        });
      }
    }
    const last = saved.chunks.at(-1);
    this.buffer.end({ stream: saved.stream, status: "done", frames: last ? last.startFrame + last.frames : null });
    this.endInfo = { stream: saved.stream, status: "done" };
    this.setStatus("last result");
  }

  // ------------------------------------------------------------------------------------------ controls
  async control(action, opts = {}) {
    let body;
    try {
      body = controlBody(this.tracker.stream, action, {
        ...opts, blendChunks: this.mode.value === "blend" ? Number(this.blend.value) : 0 });
    } catch (e) {
      this.tracker.failed(e.message);
      this.renderLive();
      return;
    }
    this.tracker.sent(action, body);
    if (action === "prompt") this.promptInput.value = "";
    this.renderLive();
    try {
      const { status, json } = await this.host.post(this.info?.controlsUrl ?? "/selfforcing/live/control", body);
      const err = responseError(status, json);
      if (err) {
        this.tracker.failed(err);
        if (action === "prompt") this.tracker.requested = null;
      }
    } catch (e) {
      this.tracker.failed(`could not reach the server: ${e.message ?? e}`);
    }
    this.renderLive();
  }

  renderLive() {
    const t = this.tracker;
    const live = this.info?.live === true;
    const can = live && t.controllable;
    for (const b of [this.pauseBtn, this.stopBtn, this.resetBtn]) b.disabled = !can;
    this.promptInput.disabled = !can;
    setIcon(this.pauseBtn, t.state === "paused" ? "pi-play" : "pi-pause", t.state === "paused" ? "Resume" : "Pause");
    this.promptLine.textContent = t.error ?? t.promptLine();
    this.promptLine.title = this.promptLine.textContent;
    this.promptLine.classList.toggle("sf-error", t.error !== null);
    this.badge.style.display = live ? "block" : "none";
    this.badge.classList.toggle("sf-live", live);
    this.badge.classList.toggle("sf-paused", t.state === "paused");
    this.badge.classList.toggle("sf-ended", t.state === "stopped");
  }

  jumpToLive() {
    if (!this.info?.live || this.usingVideo) return;
    this.pacer.seek(Math.max(this.buffer.start, this.buffer.available - 1), performance.now());
    this.schedule();
  }

  // ------------------------------------------------------------------------------------------ playback
  setFps(fps) {
    if (fps > 0) {
      this.pacer.setFps(fps);
      this.userFps = true;
      if (this.usingVideo) this.video.playbackRate = fps / (this.info?.fps || fps);
    }
  }

  toggle() {
    this.playing = !this.playing;
    setIcon(this.playBtn, this.playing ? "pi-pause" : "pi-play", "");
    if (this.usingVideo) {
      if (this.playing) this.video.play().catch(() => {}); else this.video.pause();
    } else if (this.playing) {
      this.pacer.seek(this.pacer.position, performance.now()); // resume from the current frame
      this.schedule();
    }
  }

  seekTo(v) {
    if (this.usingVideo) {
      this.video.currentTime = v;
    } else {
      this.pacer.seek(v, performance.now());
      this.drawFrame(v);
    }
  }

  useVideo(file) {
    this.usingVideo = file !== null;
    this.video.hidden = !this.usingVideo;
    this.canvas.hidden = this.usingVideo;
    if (!this.usingVideo) {
      this.video.removeAttribute("src");
      return;
    }
    this.placeholder.hidden = true;
    this.video.src = this.host.apiURL(viewPath(file));
    this.video.ontimeupdate = () => {
      const d = Number.isFinite(this.video.duration) ? this.video.duration : 0;
      this.seek.max = String(d);
      this.seek.step = "0.01";
      this.seek.value = String(this.video.currentTime);
      this.time.textContent = `${fmt(this.video.currentTime)} / ${fmt(d)}`;
      this.canvas.dataset.frames = String(this.endInfo?.frames ?? "");
    };
    if (this.playing) this.video.play().catch(() => {});
  }

  schedule() {
    if (this.raf === null && this.playing && !this.usingVideo) this.raf = requestAnimationFrame((t) => this.draw(t));
  }

  draw(now) {
    this.raf = null;
    const b = this.buffer;
    const k = this.pacer.tick(now, b.available, b.ended, b.start);
    if (k >= 0) this.drawFrame(k);
    if (this.info?.live) {
      this.badge.innerHTML = "";
      this.badge.append(el("span", "sf-dot"), this.tracker.indicator(this.pacer.behind(b.available)));
    }
    if (this.playing && b.available > 0) this.schedule();
  }

  drawFrame(k) {
    const f = this.buffer.frameAt(k);
    if (f && f.payload) {
      const ctx = this.canvas.getContext("2d");
      ctx.drawImage(f.payload, f.sx, f.sy, f.width, f.height, 0, 0, this.canvas.width, this.canvas.height);
    }
    const b = this.buffer;
    this.canvas.dataset.frame = String(k);
    this.canvas.dataset.frames = String(b.available);
    this.seek.min = String(b.start);
    this.seek.max = String(Math.max(b.start, b.available - 1));
    this.seek.step = "1";
    this.seek.value = String(k);
    const fps = this.pacer.fps;
    this.time.textContent = `${fmt(k / fps)} / ${fmt(b.available / fps)}`;
  }

  destroy() {
    if (this.raf !== null) cancelAnimationFrame(this.raf);
    this.raf = null;
    this.playing = false;
    this.useVideo(null);
  }
}
