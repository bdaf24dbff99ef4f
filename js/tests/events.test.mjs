import { test } from "node:test";
import assert from "node:assert/strict";
import { EVENTS, parseChunk, parseEnd, parseLiveState, parseStart, stripFrames, viewPath } from "../lib/events.js";

const chunk = {
  stream: "ab12", node: "6", source: "sampler", chunk: 1, total_chunks: 7, start_frame: 9, frames: 12,
  width: 832, height: 480, fps: 16, image: { filename: "ab12_00001.jpg", subfolder: "selfforcing", type: "temp" },
  elapsed_s: 1.25,
};

test("event names match the Python side", () => {
  assert.deepEqual(EVENTS, ["selfforcing.stream_start", "selfforcing.chunk", "selfforcing.live_state",
                            "selfforcing.stream_end"]);
});

test("a chunk event parses into the player's values", () => {
  const c = parseChunk(chunk);
  assert.equal(c.startFrame, 9);
  assert.equal(c.totalChunks, 7);
  assert.equal(c.image.subfolder, "selfforcing");
  assert.equal(c.elapsed, 1.25);
});

test("malformed events are rejected with the field named", () => {
  assert.throws(() => parseChunk({ ...chunk, frames: -1 }), /'frames'/);
  assert.throws(() => parseChunk({ ...chunk, image: {} }), /'filename'/);
  assert.throws(() => parseChunk({ ...chunk, fps: 0 }), /'fps'/);
  assert.throws(() => parseStart({}), /'stream'/);
});

test("stream end statuses are normalised; a live end carries the finished file", () => {
  assert.equal(parseEnd({ stream: "x", status: "interrupted", frames: 21 }).status, "interrupted");
  assert.equal(parseEnd({ stream: "x", status: "weird" }).status, "done");
  const e = parseEnd({ stream: "x", status: "stopped", chunks: 40, file: { filename: "live_00001.mp4",
                                                                            subfolder: "video" } });
  assert.equal(e.status, "stopped");
  assert.deepEqual(e.file, { filename: "live_00001.mp4", subfolder: "video", type: "output" });
  assert.equal(parseEnd({ stream: "x", file: { filename: "" } }).file, null);
});

test("live fields: prompt in effect, applied actions, generation speed", () => {
  const c = parseChunk({ ...chunk, live: true, total_chunks: null, prompt: "a blue circle", gen_fps: 14.5,
                         chunk_s: 0.2, actions: [{ action: "prompt", text: "a blue circle", blend_chunks: 0, ok: true },
                                                 { action: "pause", ok: false, error: "already paused" }, 7] });
  assert.equal(c.live, true);
  assert.equal(c.totalChunks, null);
  assert.equal(c.prompt, "a blue circle");
  assert.equal(c.genFps, 14.5);
  assert.deepEqual(c.actions.map((a) => [a.action, a.ok, a.error]),
                   [["prompt", true, null], ["pause", false, "already paused"]]);
  const plain = parseChunk(chunk); // a batch run's chunk has none of them
  assert.equal(plain.live, false);
  assert.deepEqual(plain.actions, []);
  const s = parseStart({ stream: "x", fps: 8, live: true, prompt: "a red square", total_chunks: null });
  assert.equal(s.live, true);
  assert.equal(s.controlsUrl, "/selfforcing/live/control");
});

test("live state events", () => {
  const s = parseLiveState({ stream: "x", state: "paused", chunk: 3, prompt: "p" });
  assert.equal(s.paused, true);
  assert.equal(s.chunk, 3);
  assert.throws(() => parseLiveState({ stream: "x", state: "sleeping" }), /unknown live state/);
});

test("the /view path is URL-encoded", () => {
  const p = viewPath({ filename: "a b&c.jpg", subfolder: "self forcing", type: "temp" });
  assert.equal(p, "/view?filename=a+b%26c.jpg&subfolder=self+forcing&type=temp");
});

test("a strip yields one source rectangle per frame, numbered from the chunk's first frame", () => {
  const f = stripFrames(parseChunk(chunk));
  assert.equal(f.length, 12);
  assert.deepEqual(f[0], { stream: "ab12", chunk: 1, index: 9, sx: 0, sy: 0, width: 832, height: 480 });
  assert.equal(f[11].sy, 11 * 480);
  assert.equal(f[11].index, 20);
});

test("stream_start carries the stream's first chunk (0 from servers that do not send it)", () => {
  assert.equal(parseStart({ stream: "x", fps: 8, first_chunk: 7 }).firstChunk, 7);
  assert.equal(parseStart({ stream: "x", fps: 8 }).firstChunk, 0);
  assert.equal(parseStart({ stream: "x", fps: 8, first_chunk: -1 }).firstChunk, 0);
});
