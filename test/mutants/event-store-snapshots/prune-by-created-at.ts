// Mutant: old snapshots are pruned by created_at (the latest 3 by the clock), not by version, so a clock that disagrees deletes the newest snapshot
// @targets only the latest 3 snapshots of each aggregate are kept
import Database from "better-sqlite3";
import { ConcurrencyError } from "msglab/contracts/event-store-snapshots";
import type { EventStore, EventStoreOptions, Loaded, NewEvent, RecordedEvent } from "msglab/contracts/event-store-snapshots";

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS events (
    aggregate_id TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    type         TEXT    NOT NULL,
    data         TEXT    NOT NULL,
    recorded_at  TEXT    NOT NULL,
    PRIMARY KEY (aggregate_id, version)
  );
  CREATE TABLE IF NOT EXISTS snapshots (
    aggregate_id TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    PRIMARY KEY (aggregate_id, version)
  );
`;

interface EventRow {
  version: number;
  type: string;
  data: string;
  recorded_at: string;
}

export function createEventStore<S>(options: EventStoreOptions<S>): EventStore<S> {
  const { aggregate } = options;
  const every = options.snapshotEvery ?? 100;
  const keep = options.keepSnapshots ?? 3;

  const db = new Database(options.dbPath);
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 5000");
  db.exec(SCHEMA);

  const currentVersion = db.prepare<[string], { v: number }>(
    "SELECT COALESCE(MAX(version), 0) AS v FROM events WHERE aggregate_id = ?",
  );
  const insertEvent = db.prepare("INSERT INTO events (aggregate_id, version, type, data, recorded_at) VALUES (?, ?, ?, ?, ?)");
  // The latest snapshot is the highest version: clocks and created_at can disagree, versions cannot.
  const latestSnapshot = db.prepare<[string], { version: number; state: string }>(
    "SELECT version, state FROM snapshots WHERE aggregate_id = ? ORDER BY version DESC LIMIT 1",
  );
  // Strictly after the snapshot: the event at the snapshot's version is already inside its state.
  const eventsAfter = db.prepare<[string, number], EventRow>(
    "SELECT version, type, data, recorded_at FROM events WHERE aggregate_id = ? AND version > ? ORDER BY version",
  );
  const insertSnapshot = db.prepare("INSERT OR REPLACE INTO snapshots (aggregate_id, version, state, created_at) VALUES (?, ?, ?, ?)");
  const prune = db.prepare(
    `DELETE FROM snapshots WHERE aggregate_id = ? AND version NOT IN
       (SELECT version FROM snapshots WHERE aggregate_id = ? ORDER BY created_at DESC LIMIT ?)`,
  );

  function loadNow(aggregateId: string): Loaded<S> {
    const snap = latestSnapshot.get(aggregateId);
    let state = snap ? (JSON.parse(snap.state) as S) : aggregate.initial();
    let version = snap ? snap.version : 0;
    for (const row of eventsAfter.iterate(aggregateId, version)) {
      const event: RecordedEvent = {
        aggregateId,
        version: row.version,
        type: row.type,
        data: JSON.parse(row.data) as unknown,
        recordedAt: row.recorded_at,
      };
      state = aggregate.apply(state, event);
      version = row.version;
    }
    return { state, version };
  }

  // One read transaction: the snapshot and the events after it come from the same moment.
  const loadTx = db.transaction(loadNow);

  const appendTx = db.transaction((aggregateId: string, expectedVersion: number, events: NewEvent[]): number => {
    const actual = currentVersion.get(aggregateId)!.v;
    if (actual !== expectedVersion) throw new ConcurrencyError(aggregateId, expectedVersion, actual);
    const now = new Date().toISOString();
    let version = expectedVersion;
    for (const e of events) {
      version += 1;
      insertEvent.run(aggregateId, version, e.type, JSON.stringify(e.data), now);
    }
    if (Math.floor(expectedVersion / every) < Math.floor(version / every)) {
      // Read back inside the same transaction: the snapshot holds exactly what is committed with it.
      const loaded = loadNow(aggregateId);
      insertSnapshot.run(aggregateId, loaded.version, JSON.stringify(loaded.state), now);
      prune.run(aggregateId, aggregateId, keep);
    }
    return version;
  });

  return {
    append(aggregateId, expectedVersion, events) {
      try {
        // IMMEDIATE takes the write lock before the version check, so two processes cannot both
        // pass the check; the primary key is the last line of defence either way.
        return appendTx.immediate(aggregateId, expectedVersion, events);
      } catch (e) {
        if ((e as { code?: string }).code === "SQLITE_CONSTRAINT_PRIMARYKEY") {
          throw new ConcurrencyError(aggregateId, expectedVersion);
        }
        throw e;
      }
    },
    load(aggregateId) {
      return loadTx(aggregateId);
    },
    close() {
      db.close();
    },
  };
}
