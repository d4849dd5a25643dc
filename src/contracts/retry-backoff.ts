/**
 * Contract for the retry-backoff exercise: retry an async operation with capped exponential
 * backoff, optional full jitter, a limit on attempts, errors that must not be retried, and an
 * AbortSignal that stops everything.
 *
 * Time is not yours: every wait goes through the injected {@link Clock} (`clock.sleep(ms, signal)`),
 * never `setTimeout`, `Date.now()` or a timer library. The grader hands you a virtual clock, sees
 * every sleep you request, and decides when time moves.
 *
 * The delays are exact. Attempts are numbered from 1. After attempt `n` fails (and another attempt
 * is allowed), the delay before attempt `n + 1` is
 *
 * ```ts
 * const capped = Math.min(maxDelayMs, baseDelayMs * 2 ** (n - 1)); // base, 2×base, 4×base, … up to the cap
 * const delay = jitter === "none" ? capped : Math.floor(random() * capped); // "full": uniform in [0, capped)
 * ```
 *
 * The delay runs from the moment attempt `n` failed: the time the attempt itself took is not
 * subtracted from it.
 *
 * With `jitter: "full"`, `random()` is called exactly once per delay, when that delay is computed
 * (after the failed attempt, before its sleep), and never otherwise.
 */
import type { Clock } from "../kit/clock.ts";

/** The clock you wait on: `now()` in milliseconds, and `sleep(ms, signal?)`, which rejects with `signal.reason` when aborted. */
export type { Clock };

/**
 * One try of the work being retried. `attempt` is 1 for the first try, 2 for the second, …
 * `signal` is the caller's `RetryOptions.signal` (or `undefined` when there is none): pass it on,
 * so an abort also cancels the attempt in flight.
 */
export type Operation<T> = (attempt: number, signal: AbortSignal | undefined) => Promise<T>;

/** How to retry. All times are milliseconds of the injected clock. */
export interface RetryOptions {
  /** Total number of attempts, the first one included (at least 1). 1 means "never retry". */
  maxAttempts: number;
  /** The delay after the first failure; each later delay doubles it. */
  baseDelayMs: number;
  /** No delay exceeds this: the doubling is capped here and then held. */
  maxDelayMs: number;
  /**
   * `"none"`: each delay is the capped exponential value itself.
   * `"full"`: each delay is `Math.floor(random() * capped)`, spreading clients that failed together.
   */
  jitter: "none" | "full";
  /** Uniform in [0, 1). The only randomness you may use (never `Math.random`), so delays are reproducible. */
  random: () => number;
  /**
   * Says whether a failure may be retried; it receives exactly what the operation threw.
   * When it returns false that value is rethrown at once: no sleep, no other attempt.
   * When it is absent, every failure is retryable.
   */
  isRetryable?: (error: unknown) => boolean;
  /**
   * Cancels the whole retry. Already aborted: no attempt is made. Aborted during a sleep: the sleep
   * ends at once (pass the signal to `clock.sleep`). Aborted during an attempt that then fails: no
   * sleep and no retry. In every case `retry` rejects with `signal.reason` itself.
   */
  signal?: AbortSignal;
}

/**
 * Runs `operation` until it succeeds, fails with a non-retryable error, fails `maxAttempts` times,
 * or the signal aborts.
 *
 * - Success: resolves with the operation's value, as is.
 * - Out of attempts: rejects with the value the LAST attempt threw, itself (not wrapped, not the
 *   first one). There is no sleep after the last attempt.
 * - Non-retryable failure: rejects with that value at once.
 * - Abort: rejects with `options.signal.reason`, and no attempt starts afterwards.
 */
export type Retry = <T>(operation: Operation<T>, options: RetryOptions, clock: Clock) => Promise<T>;
