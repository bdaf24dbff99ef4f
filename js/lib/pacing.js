// Playback clock of the player: shows frame k at start + k / fps, never skips a frame it still has, waits
// (rebuffers) when generation is slower than playback, and starts only once `prebuffer` frames are there (or the
// stream ended). Frame numbers are absolute: `minIndex` is the oldest frame the buffer still holds; when the
// frame due was dropped (a bounded buffer under a fast live stream), playback jumps forward to it. A live view
// may follow the newest frame: with `maxLag` set, falling more than maxLag frames behind (generation faster
// than playback) jumps to half that lag. Changing the FPS keeps the current frame. Times are in milliseconds.

export class Pacer {
  constructor(fps = 16, { prebuffer = 4, loop = true, maxLag = null } = {}) {
    this.prebuffer = prebuffer;
    this.loop = loop;
    this.maxLag = maxLag;
    this.t0 = null;
    this.setFps(fps);
    this.restart();
  }

  setFps(fps) {
    if (!(fps > 0)) throw new Error(`fps must be > 0, got ${fps}`);
    if (this.t0 !== null && this.lastNow !== null) {
      this.t0 = this.lastNow - this.position * (1000 / fps); // keep the frame on screen
    }
    this.fps = fps;
  }

  restart() {
    this.t0 = null;       // time at which frame 0 is (virtually) shown
    this.position = 0;    // frame number on screen
    this.lastNow = null;
    this.waiting = true;
    this.rebuffers = 0;
    this.skipped = 0;     // frames jumped over because the buffer had dropped them
  }

  /** Continue from frame k (e.g. "jump to live", or a seek in a finished video). */
  seek(k, now) {
    this.position = Math.max(0, Math.floor(k));
    this.t0 = now - this.position * (1000 / this.fps);
    this.lastNow = now;
  }

  /** Seconds of video between the frame on screen and the newest frame received. */
  behind(available) {
    return Math.max(0, available - 1 - this.position) / this.fps;
  }

  /** The frame number to show at `now` given frames [minIndex, available); -1 before playback starts. */
  tick(now, available, ended = false, minIndex = 0) {
    this.lastNow = now;
    const period = 1000 / this.fps;
    const have = available - minIndex;
    if (this.t0 === null) {
      if (have <= 0 || (have < this.prebuffer && !ended)) return -1;
      this.t0 = now - minIndex * period;
      this.waiting = false;
    }
    let k = Math.floor((now - this.t0) / period + 1e-9);
    if (k < minIndex) { // the frames due were dropped: continue at the oldest kept one
      this.skipped += minIndex - k;
      k = minIndex;
      this.t0 = now - k * period;
    }
    if (this.maxLag !== null && !ended && available - 1 - k > this.maxLag) { // follow the live edge
      const target = available - 1 - Math.floor(this.maxLag / 2);
      this.skipped += target - k;
      k = target;
      this.t0 = now - k * period;
    }
    if (k >= available) {
      if (ended && this.loop && have > 0) {
        const cycles = Math.floor((k - minIndex) / have);
        this.t0 += cycles * have * period;
        k -= cycles * have;
      } else {
        if (!this.waiting && !ended) this.rebuffers += 1;
        this.waiting = !ended;
        k = Math.max(minIndex, available - 1);
        this.t0 = now - k * period; // resume from here when more frames arrive, without skipping
      }
    } else {
      this.waiting = false;
    }
    this.position = k;
    return k;
  }
}
