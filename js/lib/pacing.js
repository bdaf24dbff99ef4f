// Playback clock of the live player: shows frame k at start + k / fps, never skips a frame, waits (rebuffers)
// when generation is slower than playback, and starts only once `prebuffer` frames are there (or the stream
// ended). Changing the FPS keeps the current frame. Times are in milliseconds.

export class Pacer {
  constructor(fps = 16, {prebuffer = 4, loop = true} = {}) {
    this.prebuffer = prebuffer;
    this.loop = loop;
    this.setFps(fps);
    this.restart();
  }

  setFps(fps) {
    if (!(fps > 0)) throw new Error(`fps must be > 0, got ${fps}`);
    if (this.t0 !== null && this.t0 !== undefined && this.lastNow !== null) {
      this.t0 = this.lastNow - this.position * (1000 / fps); // keep the frame on screen
    }
    this.fps = fps;
  }

  restart() {
    this.t0 = null;       // time at which frame 0 is (virtually) shown
    this.position = 0;    // frame index on screen
    this.lastNow = null;
    this.waiting = true;
    this.rebuffers = 0;
  }

  /** The frame index to show at `now` given `available` frames; -1 before playback starts. */
  tick(now, available, ended = false) {
    this.lastNow = now;
    if (this.t0 === null) {
      if (available === 0 || (available < this.prebuffer && !ended)) return -1;
      this.t0 = now;
      this.waiting = false;
    }
    const period = 1000 / this.fps;
    let k = Math.floor((now - this.t0) / period + 1e-9);
    if (k >= available) {
      if (ended && this.loop && available > 0 && k >= available) {
        const cycles = Math.floor(k / available);
        this.t0 += cycles * available * period;
        k -= cycles * available;
      } else {
        if (!this.waiting && !ended) this.rebuffers += 1;
        this.waiting = !ended;
        k = Math.max(0, available - 1);
        this.t0 = now - k * period; // resume from here when more frames arrive, without skipping
      }
    } else {
      this.waiting = false;
    }
    this.position = k;
    return k;
  }
}
