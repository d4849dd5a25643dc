/**
 * Contract for the outbox-write exercise: an order service whose every state change writes its
 * event to an outbox table in the SAME SQLite transaction, so that the change and the event are
 * committed together or not at all. A relay (exercise 05-outbox/outbox-relay) publishes the outbox
 * later; the request path publishes nothing.
 *
 * The schema belongs to the grader: it creates these tables before your service starts (the
 * grader reads them on its own connection, and sometimes puts triggers on them). Don't change it.
 *
 * ```sql
 * CREATE TABLE orders (
 *   id            TEXT PRIMARY KEY,
 *   customer_id   TEXT    NOT NULL,
 *   status        TEXT    NOT NULL,   -- 'placed' | 'cancelled'
 *   total_cents   INTEGER NOT NULL,   -- Σ quantity × unitPriceCents
 *   cancel_reason TEXT                -- set when cancelled
 * );
 * CREATE TABLE outbox (               -- the table the relay (05-outbox/outbox-relay) reads
 *   id           TEXT PRIMARY KEY,      -- the event's id: a v4 UUID (crypto.randomUUID())
 *   aggregate_id TEXT NOT NULL,         -- the order's id
 *   event_type   TEXT NOT NULL,         -- 'order.placed' | 'order.cancelled' (the relay's routing key)
 *   payload      TEXT NOT NULL,         -- JSON.stringify(the event's payload)
 *   created_at   TEXT NOT NULL,         -- new Date(deps.clock.now()).toISOString()
 *   processed_at TEXT,                  -- the relay's: leave it NULL
 *   retry_count  INTEGER NOT NULL DEFAULT 0,  -- the relay's
 *   error        TEXT                   -- the relay's
 * );
 * ```
 *
 * Payloads (the `payload` column is `JSON.stringify` of exactly this, so `JSON.parse` gives it back):
 * - `order.placed`:    {@link OrderPlaced} `{ orderId, customerId, lines, totalCents }` (`lines` as given, in order);
 * - `order.cancelled`: {@link OrderCancelled} `{ orderId, reason }`.
 *
 * `created_at` is the time of the write, read from `deps.clock` while the request runs (not
 * `Date.now()`, not a time remembered from earlier), written as `Date.prototype.toISOString()`
 * writes it: UTC, milliseconds, `Z` (`2031-04-05T06:07:08.009Z`). One format for every row keeps
 * `ORDER BY created_at` in time order for the relay.
 *
 * Other processes write the same file at the same time (other instances of the service, and the
 * grader, which sometimes holds the write lock for a moment). The database comes with a busy
 * timeout; take the write lock at the start of a transaction that reads before it writes (`BEGIN
 * IMMEDIATE`, or better-sqlite3's `db.transaction(fn).immediate()`): a deferred transaction that
 * has read cannot wait for the lock and fails with `SQLITE_BUSY`.
 */
import type { Database } from "better-sqlite3";

export interface OrderLine {
  sku: string;
  /** A positive integer. */
  quantity: number;
  /** A non-negative integer. */
  unitPriceCents: number;
}

export interface PlaceOrder {
  /** Any non-empty string (quotes, spaces, Unicode); the primary key of `orders`. */
  orderId: string;
  customerId: string;
  /** At least one line. */
  lines: OrderLine[];
}

/** The event of a placed order, as `JSON.parse(payload)` must give it back. */
export interface OrderPlaced {
  orderId: string;
  customerId: string;
  lines: OrderLine[];
  totalCents: number;
}

/** The event of a cancelled order. */
export interface OrderCancelled {
  orderId: string;
  reason: string;
}

export interface Clock {
  /** Milliseconds since the epoch: the only clock the service may read. */
  now(): number;
}

export interface OrderServiceDeps {
  /** The service's database (better-sqlite3; WAL, busy timeout), tables created. Shared with other processes. */
  db: Database;
  clock: Clock;
  /**
   * The message bus. The relay uses it, in another process, later; the request path must NOT:
   * a publish next to the commit is the dual write the outbox exists to avoid (the commit can
   * succeed and the publish fail, or the other way round). The grader fails any call to it.
   */
  bus: { publish(type: string, payload: unknown): Promise<void> };
}

export interface OrderService {
  /**
   * In ONE transaction: inserts the order (status 'placed', its total) and its `order.placed`
   * outbox row. An order id that exists already: throws an {@link OrderRejected} and writes
   * nothing. Any failure of either write (the grader makes one fail) rolls back both, and the
   * error reaches the caller.
   */
  placeOrder(cmd: PlaceOrder): void | Promise<void>;
  /**
   * In ONE transaction: sets a 'placed' order to 'cancelled' with the reason, and writes its
   * `order.cancelled` outbox row. An unknown order, or one not 'placed' (already cancelled): throws
   * an {@link OrderRejected} and writes nothing. Two processes cancelling the same order at once:
   * exactly one succeeds, the other gets an OrderRejected, and there is one `order.cancelled` row.
   */
  cancelOrder(orderId: string, reason: string): void | Promise<void>;
}

/** The entry point the grader calls, once per process. */
export type CreateOrderService = (deps: OrderServiceDeps) => OrderService;

/** A request the order's state refuses. Recognized by its `name`. */
export class OrderRejected extends Error {
  override name = "OrderRejected";
  constructor(
    readonly orderId: string,
    reason: string,
  ) {
    super(`order ${JSON.stringify(orderId)}: ${reason}`);
  }
}
