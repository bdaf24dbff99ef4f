// The DOM of the player (js/lib/player.js): the screen, the transport row, the live control panel and the
// status line, built with the editor's classes and icons (js/lib/player_style.js). `buildView(player)` sets the
// elements on the player and wires them to its methods.
import { ensureStyles } from "./player_style.js";

export function el(tag, cls, props = {}) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  return Object.assign(e, props);
}

export function button(icon, label, title, onclick) {
  const b = el("button", "sf-btn", { type: "button", title, onclick });
  b.append(el("i", `pi ${icon}`));
  if (label) b.append(el("span", "", { textContent: label }));
  return b;
}

export function setIcon(btn, icon, label) {
  btn.querySelector("i").className = `pi ${icon}`;
  const span = btn.querySelector("span");
  if (span) span.textContent = label;
}

export const fmt = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

export function buildView(p) {
  ensureStyles();
  p.root = el("div", "sf-player selfforcing-player");
  p.screen = el("div", "sf-screen");
  p.canvas = el("canvas", "sf-canvas", { width: 320, height: 180 });
  p.video = el("video", "sf-video", { muted: true, loop: true, playsInline: true, hidden: true });
  p.placeholder = el("div", "sf-placeholder");
  p.placeholder.append(el("i", "pi pi-video"), el("span", "", {
    textContent: p.liveNode ? "Run the workflow: the live video plays here; steer it below"
      : "The video plays here while it is generated" }));
  p.badge = el("div", "sf-badge", { title: "click: jump to the newest frame" });
  p.badge.onclick = () => p.jumpToLive();
  p.screen.append(p.canvas, p.video, p.placeholder, p.badge);

  p.playBtn = button("pi-pause", "", "pause / play the view (generation goes on)", () => p.toggle());
  p.seek = el("input", "", { type: "range", min: "0", max: "0", value: "0", step: "1", title: "position" });
  p.seek.oninput = () => p.seekTo(Number(p.seek.value));
  p.time = el("span", "sf-time", { textContent: "" });
  p.fpsInput = el("input", "sf-input sf-num", { type: "number", min: "1", max: "60", value: "16",
                                                title: "playback frames per second" });
  p.fpsInput.onchange = () => p.setFps(Number(p.fpsInput.value));
  const bar = el("div", "sf-row");
  bar.append(p.playBtn, p.seek, p.time, p.fpsInput, el("span", "sf-time", { textContent: "fps" }));

  p.livePanel = el("div", "sf-live-panel", { hidden: !p.liveNode });
  p.promptInput = el("input", "sf-input sf-prompt", {
    type: "text", placeholder: "New prompt - Enter: switch at the next chunk", spellcheck: false });
  p.promptInput.addEventListener("keydown", (e) => {
    e.stopPropagation(); // typing here must not trigger the editor's shortcuts
    if (e.key === "Enter" && !e.isComposing) {
      e.preventDefault();
      p.control("prompt", { text: p.promptInput.value });
    }
  });
  p.promptInput.addEventListener("keyup", (e) => e.stopPropagation());
  p.mode = el("select", "sf-input", { title: "how a new prompt takes over" });
  p.mode.append(el("option", "", { value: "recache", textContent: "switch: re-cache" }),
                el("option", "", { value: "blend", textContent: "switch: blend over" }));
  p.blend = el("input", "sf-input sf-num", { type: "number", min: "1", max: "64", value: "3", hidden: true,
                                              title: "chunks to blend the old prompt into the new one" });
  p.mode.onchange = () => { p.blend.hidden = p.mode.value !== "blend"; };
  p.pauseBtn = button("pi-pause", "Pause", "pause generation at the next chunk boundary",
                      () => p.control(p.tracker.state === "paused" ? "resume" : "pause"));
  p.stopBtn = button("pi-stop", "Stop", "stop: finish the mp4 and the session", () => p.control("stop"));
  p.resetBtn = button("pi-refresh", "Reset", "drop the cache: start a new shot", () => p.control("reset"));
  const ctl = el("div", "sf-row");
  ctl.append(p.mode, p.blend, el("span", "sf-spacer"), p.pauseBtn, p.stopBtn, p.resetBtn);
  p.promptLine = el("div", "sf-line", { title: "" });
  p.livePanel.append(p.promptInput, ctl, p.promptLine);

  p.status = el("div", "sf-line selfforcing-status", { textContent: "" });
  p.root.append(p.screen, bar, p.livePanel, p.status);
}
