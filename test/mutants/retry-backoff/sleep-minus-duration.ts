// Mutant: sleeps the delay minus the time the attempt took (measured on the clock), as if the delay ran from the attempt's start
// @targets without jitter, the delay after failure n is baseDelayMs × 2^(n−1)
// @targets a success on attempt k returns its value after exactly k−1 sleeps
import type { Clock, Operation, RetryOptions } from "msglab/contracts/retry-backoff";

export async function retry<T>(operation: Operation<T>, options: RetryOptions, clock: Clock): Promise<T> {
  const { signal } = options;
  const isRetryable = options.isRetryable ?? (() => true);
  signal?.throwIfAborted();
  for (let attempt = 1; ; attempt++) {
    const started = clock.now();
    try {
      return await operation(attempt, signal);
    } catch (error) {
      signal?.throwIfAborted();
      if (!isRetryable(error) || attempt >= options.maxAttempts) throw error;
    }
    const capped = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (attempt - 1));
    const delay = options.jitter === "full" ? Math.floor(options.random() * capped) : capped;
    await clock.sleep(Math.max(0, delay - (clock.now() - started)), signal);
    signal?.throwIfAborted();
  }
}
