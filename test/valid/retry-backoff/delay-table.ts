// Valid: a while loop over an explicit state object; the capped delay comes from a precomputed table (drawn lazily: random() only when a delay is needed); abort checked with signal.aborted and signal.reason
import type { Clock, Operation, RetryOptions } from "msglab/contracts/retry-backoff";

function cappedDelays(options: RetryOptions): number[] {
  const out: number[] = [];
  for (let n = 1; n < options.maxAttempts; n++) out.push(Math.min(options.maxDelayMs, options.baseDelayMs * Math.pow(2, n - 1)));
  return out;
}

export async function retry<T>(operation: Operation<T>, options: RetryOptions, clock: Clock): Promise<T> {
  const caps = cappedDelays(options);
  const state = { attempt: 0, lastError: undefined as unknown };
  const stopIfAborted = () => {
    if (options.signal && options.signal.aborted) throw options.signal.reason;
  };
  stopIfAborted();
  while (true) {
    state.attempt += 1;
    let result: { value: T } | null = null;
    try {
      result = { value: await operation(state.attempt, options.signal) };
    } catch (e) {
      state.lastError = e;
    }
    if (result) return result.value;
    stopIfAborted();
    if (options.isRetryable && !options.isRetryable(state.lastError)) throw state.lastError;
    if (state.attempt === options.maxAttempts) throw state.lastError;
    const cap = caps[state.attempt - 1]!;
    await clock.sleep(options.jitter === "none" ? cap : Math.floor(cap * options.random()), options.signal);
    stopIfAborted();
  }
}
