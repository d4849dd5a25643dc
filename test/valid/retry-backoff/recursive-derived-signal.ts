// Valid: recursion instead of a loop; the next delay is derived from the previous one (doubled, then capped); each sleep gets a signal derived with AbortSignal.any, not the caller's own
import type { Clock, Operation, RetryOptions } from "msglab/contracts/retry-backoff";

export function retry<T>(operation: Operation<T>, options: RetryOptions, clock: Clock): Promise<T> {
  const { signal } = options;
  const retryable = (e: unknown) => (options.isRetryable ? options.isRetryable(e) : true);
  const attempt = async (n: number, previousCap: number): Promise<T> => {
    if (signal?.aborted) throw signal.reason;
    try {
      return await operation(n, signal);
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (n >= options.maxAttempts || !retryable(error)) throw error;
      const cap = n === 1 ? Math.min(options.baseDelayMs, options.maxDelayMs) : Math.min(previousCap * 2, options.maxDelayMs);
      const delay = options.jitter === "full" ? Math.floor(options.random() * cap) : cap;
      const sleepSignal = signal ? AbortSignal.any([signal]) : undefined;
      await clock.sleep(delay, sleepSignal);
      return attempt(n + 1, cap);
    }
  };
  return attempt(1, 0);
}
