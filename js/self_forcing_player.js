// Self Forcing live player: plays the chunks of a video while the graph is still running.
//
// The sampler / continue / decode nodes write each decoded chunk as a JPEG strip to the temp folder and send
// `selfforcing.chunk` events (nodes/streaming.py). This extension gives those nodes a player widget that loads
// the strips, queues their frames (lib/frame_queue.js) and shows them at the chosen FPS (lib/pacing.js).
// The finished video stays in the player and loops until the next run.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { EVENT_PREFIX, parseChunk, parseEnd, parseStart, stripFrames, viewPath } from "./lib/events.js";
import { VideoBuffer } from "./lib/frame_queue.js";
import { Pacer } from "./lib/pacing.js";

const PLAYER_NODES = new Set(["SF_CausalSampler", "SF_ContinueSession", "SF_StreamingDecode"]);
const players = new Map(); // node id (string) -> Player

class Player {
  constructor(node) {
    this.node = node;
    this.buffer = new VideoBuffer();
    this.pacer = new Pacer(16, { prebuffer: 4, loop: true });
    this.playing = true;
    this.root = document.createElement("div");
    this.root.className = "selfforcing-player";
    this.root.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;height:100%;";
    this.canvas = document.createElement("canvas");
    this.canvas.width = 320;
    this.canvas.height = 180;
    this.canvas.style.cssText = "width:100%;flex:1;min-height:100px;background:#111;object-fit:contain;";
    const bar = document.createElement("div");
    bar.style.cssText = "display:flex;gap:6px;align-items:center;font:11px sans-serif;color:#ccc;";
    this.button = document.createElement("button");
    this.button.textContent = "pause";
    this.button.onclick = () => this.toggle();
    this.fpsInput = document.createElement("input");
    this.fpsInput.type = "number";
    this.fpsInput.min = "1";
    this.fpsInput.max = "60";
    this.fpsInput.value = "16";
    this.fpsInput.title = "playback frames per second";
    this.fpsInput.style.width = "44px";
    this.fpsInput.onchange = () => this.setFps(Number(this.fpsInput.value));
    this.status = document.createElement("span");
    this.status.className = "selfforcing-status";
    this.status.textContent = "waiting for chunks";
    bar.append(this.button, this.fpsInput, document.createTextNode("fps"), this.status);
    this.root.append(this.canvas, bar);
    this.userFps = false;
    this.raf = null;
  }

  setFps(fps) {
    if (fps > 0) {
      this.pacer.setFps(fps);
      this.userFps = true;
    }
  }

  toggle() {
    this.playing = !this.playing;
    this.button.textContent = this.playing ? "pause" : "play";
    if (this.playing) {
      this.pacer.t0 = null; // resume from the current frame
      this.schedule();
    }
  }

  start(info) {
    this.buffer.reset(info.stream, info);
    this.endInfo = null;
    this.progress = null;
    this.pacer.restart();
    if (!this.userFps) {
      this.pacer.setFps(info.fps);
      this.fpsInput.value = String(info.fps);
    }
    this.status.textContent = `generating (${info.source})`;
    this.schedule();
  }

  addChunk(chunk) {
    if (this.buffer.stream !== chunk.stream) this.start({ ...chunk, source: chunk.source });
    const img = new Image();
    img.onload = () => {
      this.buffer.add(chunk, stripFrames(chunk), img);
      if (this.canvas.width !== chunk.width || this.canvas.height !== chunk.height) {
        this.canvas.width = chunk.width;
        this.canvas.height = chunk.height;
      }
      const total = chunk.totalChunks ? `/${chunk.totalChunks}` : "";
      this.progress = `chunk ${chunk.chunk + 1}${total} · ${this.buffer.available} frames` +
        (chunk.elapsed !== null ? ` · ${chunk.elapsed.toFixed(1)} s` : "");
      this.renderStatus();
      this.schedule();
    };
    img.src = api.apiURL(viewPath(chunk.image));
  }

  end(info) {
    this.buffer.end(info);
    this.endInfo = info;
    this.renderStatus();
    this.schedule();
  }

  renderStatus() {
    const info = this.endInfo;
    if (info && info.stream === this.buffer.stream) {
      // the last strips may still be loading when the stream ends: count what the stream announced
      const frames = info.frames ?? this.buffer.available;
      this.status.textContent = info.status === "done"
        ? `done · ${frames} frames${info.elapsed !== null ? ` in ${info.elapsed.toFixed(1)} s` : ""}`
        : `${info.status} after ${frames} frames`;
    } else if (this.progress) {
      this.status.textContent = this.progress;
    }
  }

  schedule() {
    if (this.raf === null && this.playing) this.raf = requestAnimationFrame((t) => this.draw(t));
  }

  draw(now) {
    this.raf = null;
    const k = this.pacer.tick(now, this.buffer.available, this.buffer.ended);
    if (k >= 0) {
      const f = this.buffer.frames[k];
      const ctx = this.canvas.getContext("2d");
      ctx.drawImage(f.payload, f.sx, f.sy, f.width, f.height, 0, 0, this.canvas.width, this.canvas.height);
      this.canvas.dataset.frame = String(k);
      this.canvas.dataset.frames = String(this.buffer.available);
    }
    if (this.playing && this.buffer.available > 0) this.schedule();
  }
}

function playerFor(nodeId) {
  const key = String(nodeId);
  if (players.has(key)) return players.get(key);
  const node = app.graph?.getNodeById?.(Number(nodeId));
  if (!node || !PLAYER_NODES.has(node.comfyClass ?? node.type)) return null;
  const player = new Player(node);
  // a fixed height band: the node's own preview image (progress previews) is laid out below it, not over it
  node.addDOMWidget("selfforcing_player", "selfforcing_player", player.root, {
    serialize: false, hideOnZoom: false, getMinHeight: () => 200, getMaxHeight: () => 320,
  });
  node.setSize?.([Math.max(node.size[0], 340), node.size[1] + 260]);
  players.set(key, player);
  return player;
}

function on(kind, handler) {
  api.addEventListener(EVENT_PREFIX + kind, (ev) => {
    try {
      handler(ev.detail);
    } catch (err) {
      console.warn("selfforcing player:", err);
    }
  });
}

app.registerExtension({
  name: "selfforcing.live_player",
  async setup() {
    on("stream_start", (d) => playerFor(d.node)?.start(parseStart(d)));
    on("chunk", (d) => playerFor(d.node)?.addChunk(parseChunk(d)));
    on("stream_end", (d) => playerFor(d.node)?.end(parseEnd(d)));
    api.addEventListener("execution_start", () => {
      for (const p of players.values()) p.status.textContent = "queued";
    });
    window.selfForcingPlayers = players; // for debugging and the browser test
  },
});
