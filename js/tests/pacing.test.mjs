import { test } from "node:test";
import assert from "node:assert/strict";
import { Pacer } from "../lib/pacing.js";

test("waits for the prebuffer, then shows frame k at k / fps", () => {
  const p = new Pacer(10, { prebuffer: 3 });
  assert.equal(p.tick(0, 2), -1);
  assert.equal(p.tick(50, 3), 0);
  assert.equal(p.tick(149, 3), 0);
  assert.equal(p.tick(150, 3), 1);
  assert.equal(p.tick(250, 3), 2);
});

test("a short ended stream starts without the prebuffer", () => {
  const p = new Pacer(10, { prebuffer: 8 });
  assert.equal(p.tick(0, 5, true), 0);
});

test("never skips frames: when playback outruns generation it holds the last frame, then resumes", () => {
  const p = new Pacer(10, { prebuffer: 1 });
  p.tick(0, 2);
  assert.equal(p.tick(100, 2), 1);
  assert.equal(p.tick(500, 2), 1); // starved: hold frame 1
  assert.equal(p.rebuffers, 1);
  assert.equal(p.tick(520, 5), 1); // more frames arrive: continue with 2 a period later, not jump to 4
  assert.equal(p.tick(600, 5), 2);
  assert.equal(p.tick(700, 5), 3);
});

test("changing the FPS keeps the frame on screen", () => {
  const p = new Pacer(10, { prebuffer: 1 });
  p.tick(0, 100);
  assert.equal(p.tick(1000, 100), 10);
  p.setFps(20);
  assert.equal(p.tick(1000, 100), 10);
  assert.equal(p.tick(1050, 100), 11);
  assert.throws(() => p.setFps(0), /fps/);
});

test("a finished video loops", () => {
  const p = new Pacer(10, { prebuffer: 1, loop: true });
  p.tick(0, 4, true);
  assert.equal(p.tick(300, 4, true), 3);
  assert.equal(p.tick(400, 4, true), 0);
  assert.equal(p.tick(1000, 4, true), 2);
});

test("frames dropped by a bounded buffer are jumped over, the rest is never skipped", () => {
  const p = new Pacer(10, { prebuffer: 1 });
  assert.equal(p.tick(0, 10, false, 0), 0);
  assert.equal(p.tick(200, 10, false, 0), 2);
  assert.equal(p.tick(300, 50, false, 20), 20); // frames 0..19 were dropped: continue at the oldest kept
  assert.equal(p.skipped, 17);
  assert.equal(p.tick(400, 50, false, 20), 21);
});

test("a finished stream whose start was dropped loops over the frames kept", () => {
  const p = new Pacer(10, { prebuffer: 1 });
  assert.equal(p.tick(0, 14, true, 10), 10); // starts at the oldest kept frame
  assert.equal(p.tick(300, 14, true, 10), 13);
  assert.equal(p.tick(400, 14, true, 10), 10);
});

test("seconds behind the newest frame, and a jump to it", () => {
  const p = new Pacer(10, { prebuffer: 1 });
  p.tick(0, 40);
  assert.equal(p.tick(500, 40), 5);
  assert.equal(p.behind(40), 3.4);
  p.seek(38, 500);
  assert.equal(p.tick(500, 40), 38);
  assert.equal(p.tick(600, 40), 39);
  assert.ok(Math.abs(p.behind(40)) < 1e-9);
});

test("a live view follows the newest frame when generation outruns playback", () => {
  const p = new Pacer(10, { prebuffer: 1, maxLag: 8 });
  assert.equal(p.tick(0, 3), 0);
  assert.equal(p.tick(100, 9), 1); // 7 behind: within the lag, every frame shown
  assert.equal(p.tick(200, 30), 25); // 28 behind: jump to 4 behind the newest
  assert.equal(p.skipped, 23);
  assert.equal(p.tick(300, 30), 26);
  const ended = new Pacer(10, { prebuffer: 1, maxLag: 8 }); // a stream that has ended plays every frame
  ended.tick(0, 30, true);
  assert.equal(ended.tick(2000, 30, true), 20);
  const batch = new Pacer(10, { prebuffer: 1 }); // a batch run never skips
  batch.tick(0, 3);
  assert.equal(batch.tick(200, 300), 2);
});
