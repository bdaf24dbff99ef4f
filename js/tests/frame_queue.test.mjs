import { test } from "node:test";
import assert from "node:assert/strict";
import { stripFrames } from "../lib/events.js";
import { VideoBuffer } from "../lib/frame_queue.js";

const mk = (chunk, startFrame, frames, stream = "s1") =>
  ({ stream, chunk, startFrame, frames, width: 4, height: 2 });

test("frames become playable as a contiguous prefix, whatever order chunks load in", () => {
  const b = new VideoBuffer();
  const c0 = mk(0, 0, 9), c1 = mk(1, 9, 12), c2 = mk(2, 21, 12);
  b.add(c2, stripFrames(c2), "img2");
  assert.equal(b.available, 0);
  b.add(c0, stripFrames(c0), "img0");
  assert.equal(b.available, 9);
  b.add(c1, stripFrames(c1), "img1");
  assert.equal(b.available, 33);
  assert.deepEqual(b.frames.map((f) => f.index), [...Array(33).keys()]);
  assert.equal(b.frames[20].payload, "img1");
  assert.equal(b.frames[21].payload, "img2");
});

test("duplicates and chunks of another stream are ignored", () => {
  const b = new VideoBuffer();
  const c0 = mk(0, 0, 9);
  assert.ok(b.add(c0, stripFrames(c0)));
  assert.equal(b.add(c0, stripFrames(c0)), false);
  const other = mk(1, 9, 12, "old");
  assert.equal(b.add(other, stripFrames(other)), false);
  assert.equal(b.available, 9);
});

test("the video is complete only when the stream ended and nothing is missing", () => {
  const b = new VideoBuffer();
  const c0 = mk(0, 0, 9), c1 = mk(1, 9, 12);
  b.add(c0, stripFrames(c0));
  b.end({ stream: "s1", status: "done", frames: 21 });
  assert.equal(b.complete, false);
  b.add(c1, stripFrames(c1));
  assert.equal(b.complete, true);
  assert.equal(b.status, "done");
});

test("reset starts a new video", () => {
  const b = new VideoBuffer();
  const c0 = mk(0, 0, 9);
  b.add(c0, stripFrames(c0));
  b.reset("s2");
  assert.equal(b.available, 0);
  assert.equal(b.add(c0, stripFrames(c0)), false);
});
