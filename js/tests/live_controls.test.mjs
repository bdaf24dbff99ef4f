import { test } from "node:test";
import assert from "node:assert/strict";
import { parseChunk, parseLiveState } from "../lib/events.js";
import { LiveTracker, controlBody, responseError } from "../lib/live_controls.js";

const chunk = (n, prompt, actions = []) => parseChunk({
  stream: "s", node: "7", source: "live", chunk: n, total_chunks: null, start_frame: 3 * n, frames: 3, width: 64,
  height: 64, fps: 8, image: { filename: `s_${n}.jpg` }, live: true, prompt, gen_fps: 20, chunk_s: 0.15, actions });

test("control requests follow the contract, bad input is refused before sending", () => {
  assert.deepEqual(controlBody("s", "prompt", { text: "  a blue circle moving up ", blendChunks: 2 }),
                   { stream: "s", action: "prompt", text: "a blue circle moving up", blend_chunks: 2 });
  assert.deepEqual(controlBody("s", "pause"), { stream: "s", action: "pause" });
  assert.throws(() => controlBody("s", "prompt", { text: "   " }), /type a prompt/);
  assert.throws(() => controlBody("s", "prompt", { text: "x", blendChunks: -1 }), /blend over 0\.\.64/);
  assert.throws(() => controlBody("s", "prompt", { text: "x", blendChunks: 1.5 }), /blend/);
  assert.throws(() => controlBody("s", "rewind"), /unknown action "rewind"/);
  assert.throws(() => controlBody(null, "stop"), /no live stream/);
});

test("server errors are shown as the server words them", () => {
  assert.equal(responseError(200, {}), null);
  assert.equal(responseError(400, { error: "empty prompt" }), "empty prompt");
  assert.match(responseError(404, { error: "unknown stream s" }), /gone: unknown stream s/);
  assert.equal(responseError(500, null), "HTTP 500");
});

test("a requested prompt waits for the next chunk, then becomes the prompt in effect", () => {
  const t = new LiveTracker("s", "a red square");
  t.onChunk(chunk(0, "a red square"));
  t.sent("prompt", controlBody("s", "prompt", { text: "a blue circle" }));
  assert.match(t.promptLine(), /next chunk: "a blue circle" \(re-cache\)/);
  t.onChunk(chunk(1, "a red square")); // generated before the request was applied
  assert.ok(t.requested);
  t.onChunk(chunk(2, "a blue circle", [{ action: "prompt", text: "a blue circle", ok: true }]));
  assert.equal(t.requested, null);
  assert.equal(t.promptLine(), 'now: "a blue circle"');
  assert.deepEqual(t.switches, [{ chunk: 2, text: "a blue circle" }]);
});

test("state and the live indicator", () => {
  const t = new LiveTracker("s", "p");
  assert.ok(t.controllable);
  t.onChunk(chunk(11, "p"));
  assert.equal(t.indicator(0.84), "LIVE · chunk 12 · gen 20.0 fps · 0.8 s behind");
  t.onState(parseLiveState({ stream: "s", state: "paused", chunk: 12 })); // 12 chunks made: the newest is 11
  assert.match(t.indicator(), /^PAUSED · chunk 12/);
  assert.ok(t.controllable);
  t.onState(parseLiveState({ stream: "other", state: "stopped" })); // another stream's event changes nothing
  assert.equal(t.state, "paused");
  t.sent("stop", controlBody("s", "stop"));
  assert.equal(t.state, "stopping");
  assert.equal(t.controllable, false);
  t.onEnd({ stream: "s" });
  assert.equal(t.indicator(3), "ENDED · chunk 12");
});

test("a refused action is reported", () => {
  const t = new LiveTracker("s", "p");
  t.onChunk(chunk(4, "p", [{ action: "prompt", text: "", ok: false, error: "empty prompt" }]));
  assert.equal(t.error, "prompt refused: empty prompt");
});
