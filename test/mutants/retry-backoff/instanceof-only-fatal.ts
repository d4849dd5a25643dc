// Mutant: asks isRetryable only about Error instances: a thrown string or plain object is always retried
// @targets a non-retryable error is rethrown at once, without sleeping
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
      if ((error instanceof Error && !isRetryable(error)) || attempt >= options.maxAttempts) throw error;
    }
    const capped = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (attempt - 1));
    await clock.sleep(options.jitter === "full" ? Math.floor(options.random() * capped) : capped, signal);
    signal?.throwIfAborted();
  }
}
