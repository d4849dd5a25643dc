/**
 * An event-driven wait for graders: every observation (a frame on the proxy, a handler call, a
 * host exiting) pokes the pulse, and each waiter re-checks its condition then, instead of polling
 * on a timer. A violation seen by an online judge fails the wait at once, not at its deadline.
 */
import { CheckFailure } from "./fail.ts";

export class Pulse {
  private readonly waiters = new Set<() => void>();

  poke(): void {
    for (const w of [...this.waiters]) w();
  }

  /**
   * Resolves once `cond()` holds. `stop()` is asked first on every wake: a string fails the check
   * at once with it. After `ms` without `cond`, fails with `message()` (built then, so it reports
   * what was observed last); with `message` null, the time running out is the success instead.
   */
  until(cond: () => boolean, ms: number, message: (() => string) | null, stop?: () => string | null): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (err?: Error) => {
        this.waiters.delete(wake);
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const wake = () => {
        const why = stop?.() ?? null;
        if (why !== null) return done(new CheckFailure(why));
        if (cond()) done();
      };
      timer = setTimeout(() => {
        const why = stop?.() ?? null;
        if (why !== null) return done(new CheckFailure(why));
        if (cond() || message === null) return done();
        done(new CheckFailure(message()));
      }, ms);
      this.waiters.add(wake);
      wake();
    });
  }

  /** Waits `ms` while `stop()` watches every event: the first string it returns fails the check at once. */
  watch(ms: number, stop: () => string | null): Promise<void> {
    return this.until(() => false, ms, null, stop);
  }
}
