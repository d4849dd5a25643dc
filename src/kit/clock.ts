/**
 * A virtual clock the grader injects where time matters (backoff, TTLs, saga timeouts), so
 * those checks run in milliseconds and are exact. Learner code calls `now()` and `sleep()`;
 * the grader sees every sleep requested and decides when time moves.
 */
export interface Clock {
  /** Milliseconds since the clock's epoch. */
  now(): number;
  /** Resolves after `ms` of virtual time; rejects with the signal's reason if aborted first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

interface Sleeper {
  until: number;
  requested: number;
  resolve: () => void;
  reject: (e: unknown) => void;
  cleanup: () => void;
}

export class VirtualClock implements Clock {
  private time: number;
  private sleepers: Sleeper[] = [];
  /** Every sleep requested, in order, with the virtual time it was asked at. */
  readonly sleeps: { ms: number; at: number }[] = [];
  private auto = false;

  constructor(start = 0) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (!Number.isFinite(ms) || ms < 0) return Promise.reject(new RangeError(`sleep(${ms}): the delay must be a finite, non-negative number`));
    this.sleeps.push({ ms, at: this.time });
    if (signal?.aborted) return Promise.reject(signal.reason ?? new Error("aborted"));
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.sleepers = this.sleepers.filter((s) => s !== sleeper);
        reject(signal!.reason ?? new Error("aborted"));
      };
      const sleeper: Sleeper = {
        until: this.time + ms,
        requested: ms,
        resolve,
        reject,
        cleanup: () => signal?.removeEventListener("abort", onAbort),
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.sleepers.push(sleeper);
      // In auto mode time jumps straight to each wake-up, as if the sleep had really happened.
      if (this.auto) queueMicrotask(() => void this.advance(ms));
    });
  }

  /**
   * Moves time forward and wakes every sleeper that is due, earliest first. After each wake-up
   * the woken code runs (to its next await) before time moves on, so it sees the exact time it
   * woke at, and sleeps it starts within the window are honoured too.
   */
  async advance(ms: number): Promise<void> {
    const target = this.time + ms;
    for (;;) {
      const due = this.sleepers.filter((s) => s.until <= target).sort((a, b) => a.until - b.until)[0];
      if (!due) break;
      this.sleepers = this.sleepers.filter((s) => s !== due);
      this.time = Math.max(this.time, due.until);
      due.cleanup();
      due.resolve();
      await new Promise((r) => setImmediate(r));
    }
    this.time = Math.max(this.time, target);
  }

  /** From now on each sleep completes at once (in virtual time), so retry loops run flat out. */
  autoAdvance(on = true): void {
    this.auto = on;
  }

  /** How many sleeps are waiting for time to move. */
  get pending(): number {
    return this.sleepers.length;
  }
}
