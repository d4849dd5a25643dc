import type { Clock, Operation, RetryOptions } from "msglab/contracts/retry-backoff";

/**
 * The delay before attempt `failed + 1`, after `failed` failures (failed = 1, 2, 3, …):
 * the capped exponential delay, then, with full jitter, a draw below it. The contract
 * (msglab/contracts/retry-backoff) gives the exact formula.
 */
export function backoffDelay(failed: number, options: RetryOptions): number {
  // TODO: min(maxDelayMs, baseDelayMs × 2^(failed − 1)); with jitter "full", Math.floor(options.random() × that).
  // This is the seed's formula, 200 ms × 2^attempt capped at 30 s, and it ignores the options.
  return Math.min(30_000, 200 * 2 ** failed);
}

/**
 * Runs `operation` until it succeeds, or fails with an error `isRetryable` refuses, or has failed
 * `maxAttempts` times, or `options.signal` aborts. Waits only through `clock.sleep(ms, signal)`.
 */
export async function retry<T>(operation: Operation<T>, options: RetryOptions, clock: Clock): Promise<T> {
  // TODO: an already-aborted signal: reject with signal.reason and make no attempt.
  // TODO: attempts are numbered from 1; pass the attempt number and options.signal to the operation.
  // TODO: on failure, rethrow the error itself when isRetryable (default: everything) says no,
  //       when no attempt is left, or when the signal was aborted meanwhile (then signal.reason).
  // TODO: otherwise sleep backoffDelay(…) on the clock, with the signal, and try again.
  void clock;
  void options;
  void operation;
  throw new Error("TODO: implement retry()");
}
