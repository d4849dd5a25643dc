/**
 * Contract for the event-store-snapshots exercise: an event store on SQLite with optimistic
 * concurrency and periodic snapshots.
 *
 * The database schema is part of the contract, because the grader reads (and sometimes edits)
 * the two tables on its own connection to check what your code did:
 *
 * ```sql
 * CREATE TABLE events (
 *   aggregate_id TEXT    NOT NULL,
 *   version      INTEGER NOT NULL,  -- 1, 2, 3… per aggregate, no gaps
 *   type         TEXT    NOT NULL,  -- NewEvent.type
 *   data         TEXT    NOT NULL,  -- JSON.stringify(NewEvent.data)
 *   recorded_at  TEXT    NOT NULL,  -- ISO-8601 time of the append
 *   PRIMARY KEY (aggregate_id, version)
 * );
 * CREATE TABLE snapshots (
 *   aggregate_id TEXT    NOT NULL,
 *   version      INTEGER NOT NULL,  -- the aggregate's version the state was taken at
 *   state        TEXT    NOT NULL,  -- JSON.stringify(state after applying events 1..version)
 *   created_at   TEXT    NOT NULL,  -- ISO-8601; informational only
 *   PRIMARY KEY (aggregate_id, version)
 * );
 * ```
 *
 * The scaffold creates these tables; keep the names and columns. Extra columns are fine (say an
 * INTEGER rowid key), as long as a PRIMARY KEY or UNIQUE constraint covers exactly
 * (aggregate_id, version): the grader reads the schema and expects one.
 *
 * Aggregate ids are any non-empty string, compared exactly (byte for byte): quotes, colons,
 * spaces (leading and trailing), `%`, `_`, upper and lower case and any Unicode make different
 * aggregates. Bind them as parameters (`aggregate_id = ?`); never put them in the SQL text, match
 * them with LIKE, give the column a NOCASE collation, or trim them.
 */

/** An event the caller wants to append. `data` must survive `JSON.stringify` / `JSON.parse`. */
export interface NewEvent {
  type: string;
  data: unknown;
}

/** An event as stored: what `Aggregate.apply` receives during a load. */
export interface RecordedEvent {
  aggregateId: string;
  /** Its position in the aggregate's stream, from 1. */
  version: number;
  type: string;
  /** `JSON.parse` of the `data` column: the same value that was appended. */
  data: unknown;
  /** The `recorded_at` column: the time of the append, ISO-8601 (`new Date().toISOString()`). */
  recordedAt: string;
}

/**
 * How to fold events into state. The grader supplies it (and counts the `apply` calls a load
 * makes). `apply` must not be assumed idempotent: applying one event twice gives a different state.
 * The state is a plain JSON value, so a snapshot stores it with `JSON.stringify`. Both functions are
 * synchronous (the grader's, called across a process boundary; call them freely inside a
 * transaction).
 */
export interface Aggregate<S> {
  /** The state of an aggregate with no events (version 0). */
  initial(): S;
  /** The state after `event`; pure, returns a new value. */
  apply(state: S, event: RecordedEvent): S;
}

/** What `createEventStore` receives. */
export interface EventStoreOptions<S> {
  /**
   * SQLite file to use; it may not exist yet. Other processes open the same file at the same time
   * (other stores, the grader's own connection, which sometimes holds the write lock for a few
   * milliseconds): keep a busy timeout, so an append waits for the lock instead of failing.
   */
  dbPath: string;
  aggregate: Aggregate<S>;
  /**
   * Take a snapshot every this many events (default 100). Precisely: when one append moves an
   * aggregate from version `before` to version `after` and
   * `Math.floor(before / snapshotEvery) < Math.floor(after / snapshotEvery)` (the append reached or
   * passed a multiple of snapshotEvery), save ONE snapshot at version `after`, holding the state
   * after events 1..after. So 95→105 in one batch snapshots at 105; 200→430 snapshots once, at 430.
   */
  snapshotEvery?: number;
  /** Keep only this many snapshots per aggregate, the highest versions (default 3). */
  keepSnapshots?: number;
}

/** The result of a load. */
export interface Loaded<S> {
  state: S;
  /** The version of the last event applied (0 for an aggregate with no events). */
  version: number;
}

/** The store. Methods may be synchronous or return promises; the grader awaits either. */
export interface EventStore<S> {
  /**
   * Appends `events` (at least one) to `aggregateId`'s stream, as versions expectedVersion+1,
   * expectedVersion+2, … and returns the new version.
   *
   * Optimistic concurrency: `expectedVersion` must equal the aggregate's current version in the
   * database (0 for a new aggregate). If it is behind OR ahead, throw a `ConcurrencyError` and
   * write nothing (no event, no snapshot). The same holds when another connection appended the
   * same versions first: the primary key refuses the insert, and that too is a `ConcurrencyError`,
   * not a raw SQLite error; so is losing a race to another process: of two appends on top of the
   * same version, in one process or two, exactly one wins. Take the write lock before reading the
   * version (an IMMEDIATE transaction): a deferred one that has read first cannot wait for the lock
   * and fails with SQLITE_BUSY, which is not a ConcurrencyError.
   *
   * Events, the snapshot and the pruning of old snapshots commit together, in one transaction:
   * another connection never sees the events without their snapshot, and a process killed in the
   * middle of an append (even inside `aggregate.apply` while it takes the snapshot) leaves none of it.
   */
  append(aggregateId: string, expectedVersion: number, events: NewEvent[]): number | Promise<number>;
  /**
   * Reads the aggregate from the database, every call (no in-memory cache of state): the latest
   * snapshot (the highest `version`, whatever `created_at` says) parsed from JSON, then `apply`
   * for exactly the events with a version above it, in order. Without a snapshot it starts from
   * `initial()` at version 0. An unknown aggregate gives `{ state: initial(), version: 0 }`.
   */
  load(aggregateId: string): Loaded<S> | Promise<Loaded<S>>;
  /**
   * Closes every database connection this store opened, and only this store's: another store on
   * the same file carries on. Once it has returned, no connection of the store holds the file
   * (the grader then takes it for itself, `PRAGMA journal_mode = DELETE`, which SQLite refuses
   * while any other connection, an idle one too, has it open).
   */
  close(): void | Promise<void>;
}

/** The entry point the grader calls. */
export type CreateEventStore = <S>(options: EventStoreOptions<S>) => EventStore<S>;

/**
 * Thrown by `append` when `expectedVersion` is not the current version. The grader recognizes it
 * by `name === "ConcurrencyError"`, not by `instanceof`, so a class of your own with that name
 * works too.
 */
export class ConcurrencyError extends Error {
  override name = "ConcurrencyError";
  constructor(
    readonly aggregateId: string,
    readonly expectedVersion: number,
    /** The version found in the database, when known. */
    readonly actualVersion?: number,
  ) {
    super(
      `${aggregateId}: expected version ${expectedVersion}` +
        (actualVersion === undefined ? ", but another writer got there first" : `, but it is at ${actualVersion}`),
    );
  }
}
