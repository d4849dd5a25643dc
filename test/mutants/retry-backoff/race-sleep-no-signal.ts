// Mutant: the sleep is raced against an abort listener but gets no signal, so after retry() rejects the sleep is left running
// @targets an abort during a backoff sleep rejects at once with signal.reason, and no attempt follows
import type { Clock, Operation, RetryOptions } from "msglab/contracts/retry-backoff";

/**
 * The delay before attempt `failed + 1`, after `failed` failures: base × 2^(failed − 1), capped,
 * then (with full jitter) a uniform draw below that cap. The cap comes first, so full jitter spreads
 * over [0, maxDelayMs) once the doubling has reached it.
 */
export function backoffDelay(failed: number, options: RetryOptions): number {
  const capped = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (failed - 1));
  return options.jitter === "full" ? Math.floor(options.random() * capped) : capped;
}

export async function retry<T>(operation: Operation<T>, options: RetryOptions, clock: Clock): Promise<T> {
  const { signal } = options;
  const isRetryable = options.isRetryable ?? (() => true);
  // An abort that came before we started means no attempt at all.
  signal?.throwIfAborted();
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation(attempt, signal);
    } catch (error) {
      // The caller gave up while this attempt ran: stop here, whatever the error was.
      signal?.throwIfAborted();
      // Rethrow the value itself: callers match on its type or code, a wrapper hides it.
      if (!isRetryable(error) || attempt >= options.maxAttempts) throw error;
    }
    // The signal makes the sleep reject with signal.reason the moment it aborts.
    await Promise.race([
      clock.sleep(backoffDelay(attempt, options)),
      new Promise<never>((_, rej) => {
        if (!signal) return;
        signal.addEventListener("abort", () => rej(signal.reason), { once: true });
      }),
    ]);
    signal?.throwIfAborted();
  }
}
