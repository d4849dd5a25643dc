/**
 * Contract for the outbox-relay exercise (05-outbox/outbox-relay): the background half of the
 * transactional outbox. The service wrote each event into the `outbox` table in the same SQLite
 * transaction as its state change (the outbox-write exercise); the relay moves those rows to the
 * broker, oldest first, and marks each one processed once the broker has confirmed it.
 *
 * The learner exports, from `outbox-relay.ts`:
 *
 * ```ts
 * startRelay(opts: RelayOptions): Promise<Relay>
 * ```
 *
 * The table exists already (the grader creates it, and inserts the rows from a connection of its
 * own, as the service would, also while the relay runs):
 *
 * ```sql
 * CREATE TABLE outbox (
 *   id           TEXT PRIMARY KEY,      -- the event's id (any text)
 *   aggregate_id TEXT NOT NULL,
 *   event_type   TEXT NOT NULL,         -- "order.created", "order.paid", …: the routing key
 *   payload      TEXT NOT NULL,         -- the event as JSON: the message body, byte for byte
 *   created_at   TEXT NOT NULL,         -- ISO-8601 UTC with milliseconds: "2026-03-02T08:00:00.123Z"
 *   processed_at TEXT,                  -- NULL until the broker has confirmed the row's message
 *   retry_count  INTEGER NOT NULL DEFAULT 0,
 *   error        TEXT                   -- the message of the last failure, NULL until one happens
 * );
 * ```
 *
 * Neither the ids nor the order the rows were inserted in follow `created_at`; several rows may
 * share one `created_at`.
 */
import type { ChannelModel } from "amqplib";
import type { Database } from "better-sqlite3";
import type { Clock } from "../kit/clock.ts";

/** `now()` in milliseconds (synchronous) and `sleep(ms, signal?)`, which rejects with `signal.reason` when aborted. */
export type { Clock };

/** One row of the outbox table, as better-sqlite3 returns it. */
export interface OutboxRow {
  id: string;
  aggregate_id: string;
  event_type: string;
  payload: string;
  created_at: string;
  processed_at: string | null;
  retry_count: number;
  error: string | null;
}

export interface RelayOptions {
  /** The service's database, with the outbox table (better-sqlite3, WAL mode, a busy timeout set). Don't close it. */
  db: Database;
  /**
   * Opens a new connection to the broker, each call. Rejects while the broker is unreachable
   * (an Error with code "ECONNREFUSED"). Create your confirm channel on it; after a failure,
   * close what is left of it and call `connect()` again on the next attempt.
   */
  connect: () => Promise<ChannelModel>;
  /** A durable topic exchange that exists: publish every row to it, with the row's event_type as the routing key. */
  exchange: string;
  /** Every wait of yours goes through this clock (never setTimeout, setInterval or Date.now()). */
  clock: Clock;
  /** How long to sleep when a poll finds no pending row. */
  pollIntervalMs: number;
  /** At most this many rows per poll. */
  batchSize: number;
  /** The backoff after a row's first failed attempt; it doubles with each further failure of that row. */
  baseDelayMs: number;
  /** No backoff exceeds this. */
  maxDelayMs: number;
}

/** The running relay (a plain object or a class instance). */
export interface Relay {
  /**
   * Ends the relay: a sleep in progress ends at once (pass an AbortSignal to `clock.sleep`), no
   * poll, publish or write starts afterwards, the connection is closed, and it resolves once the
   * loop has ended. It does not wait for a confirm still outstanding: that publish is abandoned,
   * and its row stays pending as it is (not marked, and not counted as a failure: stopping is no
   * failure of the row's); the next relay publishes it again.
   */
  stop(): Promise<void>;
}

/**
 * Starts the relay and resolves at once (the loop runs in the background; it does not wait for
 * the first poll). The loop:
 *
 * 1. **Poll**: the pending rows (`processed_at IS NULL`), oldest first: `ORDER BY created_at, id`,
 *    at most `batchSize` of them. None: `await clock.sleep(pollIntervalMs, signal)`, then poll
 *    again. A pass that found rows is followed by the next poll at once, without sleeping.
 * 2. **Publish** each row of the pass, in that order, on a confirm channel (connect first when you
 *    have no channel): `ch.publish(exchange, row.event_type, Buffer.from(row.payload, "utf8"),
 *    { persistent: true, messageId: row.id, type: row.event_type, contentType: "application/json",
 *    headers: { aggregateId: row.aggregate_id } })`. Each row is published once per pass.
 * 3. **Mark** a row, once the broker's confirm (basic.ack) for its message has arrived:
 *    `UPDATE outbox SET processed_at = ? WHERE id = ?` with `new Date(clock.now()).toISOString()`
 *    taken then. Never before its confirm, never a row whose publish was nacked or left
 *    unconfirmed, never a row while an earlier row of the pass is unconfirmed. Waiting for a confirm
 *    has no timeout of its own: it ends when the confirm arrives or the channel closes. You may wait
 *    row by row, or publish the whole pass and then wait (per-message callbacks, or
 *    `waitForConfirms()`), and mark in one transaction or row by row.
 * 4. **A failed attempt** (`connect()` rejects, the channel or connection closes before the
 *    confirm, the broker nacks, publish throws): stop the pass (no later row of it is published
 *    after the failure is seen), drop the channel, and record the failure on the oldest pending row
 *    (the one the next attempt starts with): `retry_count = retry_count + 1` and `error` = the
 *    error's message. Then `await clock.sleep(min(maxDelayMs, baseDelayMs * 2 ** (n - 1)), signal)`,
 *    where n is that row's retry_count after this failure (so a restarted relay backs off where the
 *    last one left), and poll again. Never give up on a row and never skip it: the order is the
 *    point. A success leaves retry_count and error as they are (the row's history).
 *
 * Rows whose message was confirmed but not yet marked when the process dies are published again
 * by the next relay (at least once); a row is never lost.
 */
export type StartRelay = (opts: RelayOptions) => Promise<Relay>;

/** The learner's module, as the grader sees it. */
export interface OutboxRelaySubmission {
  startRelay: StartRelay;
}
