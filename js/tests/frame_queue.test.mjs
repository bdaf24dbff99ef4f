import { test } from "node:test";
import assert from "node:assert/strict";
import { stripFrames } from "../lib/events.js";
import { VideoBuffer, framesForBudget } from "../lib/frame_queue.js";

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

test("a stream that never ends keeps at most maxFrames and releases the strips of dropped chunks", () => {
  const b = new VideoBuffer({ maxFrames: 30 });
  let frame = 0;
  for (let c = 0; c < 2000; c++) { // 2000 chunks of 3 frames, each with its own strip "image"
    const ch = mk(c, frame, 3);
    assert.ok(b.add(ch, stripFrames(ch), { strip: c }));
    frame += 3;
    assert.ok(b.retained <= 30);
  }
  assert.equal(b.available, 6000);
  assert.equal(b.retained, 30);
  assert.equal(b.start, 5970);
  assert.equal(b.dropped, 5970);
  assert.equal(b.frameAt(5969), null);
  assert.equal(b.frameAt(5970).index, 5970);
  assert.equal(b.frameAt(5999).payload.strip, 1999);
  assert.equal(b.payloads().size, 10); // only the last 10 strips are still referenced
});

test("a strip that failed to load or a chunk that never comes does not stall the stream", () => {
  const b = new VideoBuffer({ maxPending: 2 });
  const c0 = mk(0, 0, 3), c1 = mk(1, 3, 3);
  b.add(c0, stripFrames(c0), "img0");
  b.add(c1, stripFrames(c1), null); // load error: frames kept as missing
  assert.equal(b.available, 6);
  assert.equal(b.frameAt(4).missing, true);
  for (let c = 3; c <= 5; c++) { const ch = mk(c, 3 * c, 3); b.add(ch, stripFrames(ch), `img${c}`); }
  // chunk 2 never arrived: once more than 2 later chunks wait, its frames count as missing and play goes on
  assert.equal(b.available, 18);
  assert.equal(b.missing, 6);
  assert.equal(b.frameAt(6).missing, true);
  assert.equal(b.frameAt(9).payload, "img3");
  assert.equal(b.add(mk(2, 6, 3), stripFrames(mk(2, 6, 3)), "late"), false); // too late now
});

test("the frame budget follows the frame size", () => {
  assert.equal(framesForBudget(832, 480, 400e6), 250);
  assert.equal(framesForBudget(64, 64, 400e6), 4096);
  assert.equal(framesForBudget(4096, 4096, 400e6), 48);
});

test("a stream that does not start at chunk 0 plays from its first chunk (continue, image to video, extend)", () => {
  // SF Continue Session / Image to Video / Extend Video: the first chunk of the stream is the session's next one;
  // the player waited for chunk 0 and stayed blank for runs of <= 8 chunks
  const b = new VideoBuffer();
  b.reset("s1", { firstChunk: 5 });
  const c5 = mk(5, 0, 12), c6 = mk(6, 12, 12);
  b.add(c6, stripFrames(c6), "img6");
  assert.equal(b.available, 0); // chunk 5 still loading
  b.add(c5, stripFrames(c5), "img5");
  assert.equal(b.available, 24);
  b.end({ stream: "s1", status: "done", frames: 24 });
  assert.equal(b.complete, true);
  assert.equal(b.missing, 0);
});
