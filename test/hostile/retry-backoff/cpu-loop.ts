// Attack: a synchronous infinite loop in one check (the one with dozens of attempts); correct everywhere else, so the other checks must still run and pass.
// @expect fail|error
// @min-passed 10
import type { Clock, Operation, RetryOptions } from "msglab/contracts/retry-backoff";

export async function retry<T>(operation: Operation<T>, options: RetryOptions, clock: Clock): Promise<T> {
  if (options.maxAttempts >= 36) {
    for (;;) {
      // spin: only a SIGKILL of this host ends it
    }
  }
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
    await clock.sleep(options.jitter === "full" ? Math.floor(options.random() * capped) : capped, signal);
    signal?.throwIfAborted();
  }
}
