// The outbox relay: the background half of the transactional outbox. It moves pending rows to the
// broker, oldest first, with publisher confirms, and marks each one processed once confirmed.
// Read README.md for the contract; `msglab run outbox-relay` grades this file.
import type { Relay, RelayOptions } from "msglab/contracts/outbox-relay";

/**
 * Starts the relay and resolves at once; the loop runs in the background:
 * poll the pending rows (ORDER BY created_at, id, at most batchSize) → publish each on a confirm
 * channel → mark it processed once its confirm arrived. A failed attempt adds 1 to the oldest
 * pending row's retry_count, records the error, and backs off on opts.clock. stop() ends it all.
 */
export async function startRelay(opts: RelayOptions): Promise<Relay> {
  // TODO: prepare the statements: the pending rows (in which order?), the mark, the failure record.
  // TODO: a confirm channel from opts.connect(), made when you need one, dropped after a failure.
  // TODO: the loop: poll; publish each row and wait for ITS confirm before marking it; on a
  //       failure record it on the row and sleep min(maxDelayMs, baseDelayMs * 2 ** (retry_count - 1))
  //       on opts.clock; when nothing is pending sleep pollIntervalMs on opts.clock.
  // TODO: stop(): abort the sleep (an AbortSignal), close the connection, wait for the loop to end.
  throw new Error("TODO: startRelay");
}
