// Mutant: full jitter drawn on top of the capped delay (capped + random × base) instead of below it
// @targets full jitter: each delay is floor(random() × its capped delay), one random() call per delay
// @targets full jitter stays within [0, maxDelayMs) once the doubling passes the cap
import type { Clock, Operation, RetryOptions } from "msglab/contracts/retry-backoff";

export async function retry<T>(operation: Operation<T>, options: RetryOptions, clock: Clock): Promise<T> {
  const { signal } = options;
  const isRetryable = options.isRetryable ?? (() => true);
  signal?.throwIfAborted();
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation(attempt, signal);
    } catch (error) {
      signal?.throwIfAborted();
      if (!isRetryable(error) || attempt >= options.maxAttempts) throw error;
    }
    const capped = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (attempt - 1));
    await clock.sleep(options.jitter === "full" ? capped + Math.floor(options.random() * options.baseDelayMs) : capped, signal);
    signal?.throwIfAborted();
  }
}
