// Valid: a while loop that computes each delay inline, passes the signal to clock.sleep AND races
// it against an abort listener of its own (removed after every sleep); isRetryable is checked
// before maxAttempts.
import type { Clock, Operation, RetryOptions } from "msglab/contracts/retry-backoff";

export function backoffDelay(failed: number, options: RetryOptions): number {
  const capped = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (failed - 1));
  return options.jitter === "full" ? Math.floor(options.random() * capped) : capped;
}

function sleepOrAbort(clock: Clock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return clock.sleep(ms);
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
  });
  aborted.catch(() => {});
  return Promise.race([clock.sleep(ms, signal), aborted]).finally(() => signal.removeEventListener("abort", onAbort!));
}

export async function retry<T>(operation: Operation<T>, options: RetryOptions, clock: Clock): Promise<T> {
  const signal = options.signal;
  if (signal?.aborted) throw signal.reason;
  let attempt = 0;
  while (true) {
    attempt += 1;
    let failure: unknown;
    try {
      return await operation(attempt, signal);
    } catch (e) {
      failure = e;
    }
    if (signal?.aborted) throw signal.reason;
    if (options.isRetryable && !options.isRetryable(failure)) throw failure;
    if (attempt >= options.maxAttempts) throw failure;
    const capped = Math.min(options.maxDelayMs, options.baseDelayMs * Math.pow(2, attempt - 1));
    const delay = options.jitter === "none" ? capped : Math.floor(options.random() * capped);
    await sleepOrAbort(clock, delay, signal);
    if (signal?.aborted) throw signal.reason;
  }
}
