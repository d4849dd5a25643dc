// Valid: two connections per store, a writer for appends and a read-only one for loads (a read
// transaction of its own, so the snapshot and the events after it come from one moment); async
// methods; the snapshot is due when `after % every < n`; pruning with a window function; close()
// closes both connections.
import Database from "better-sqlite3";
import type { EventStore, EventStoreOptions, Loaded, NewEvent } from "msglab/contracts/event-store-snapshots";

class ConcurrencyError extends Error {
  override name = "ConcurrencyError";
}

export function createEventStore<S>(options: EventStoreOptions<S>): EventStore<S> {
  const { aggregate } = options;
  const every = options.snapshotEvery ?? 100;
  const keep = options.keepSnapshots ?? 3;
  const writer = new Database(options.dbPath, { timeout: 5000 });
  writer.pragma("journal_mode = WAL");
  writer.exec(`
    CREATE TABLE IF NOT EXISTS events (aggregate_id TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL,
      data TEXT NOT NULL, recorded_at TEXT NOT NULL, PRIMARY KEY (aggregate_id, version));
    CREATE TABLE IF NOT EXISTS snapshots (aggregate_id TEXT NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL,
      created_at TEXT NOT NULL, PRIMARY KEY (aggregate_id, version));`);
  const reader = new Database(options.dbPath, { readonly: true, timeout: 5000 });

  const fold = (db: Database.Database, id: string): Loaded<S> => {
    const snap = db.prepare("SELECT version, state FROM snapshots WHERE aggregate_id = ? ORDER BY version DESC LIMIT 1").get(id) as
      | { version: number; state: string }
      | undefined;
    let state: S = snap ? (JSON.parse(snap.state) as S) : aggregate.initial();
    let version = snap?.version ?? 0;
    const rows = db.prepare("SELECT version, type, data, recorded_at FROM events WHERE aggregate_id = ? AND version > ? ORDER BY version").all(id, version) as {
      version: number;
      type: string;
      data: string;
      recorded_at: string;
    }[];
    for (const r of rows) {
      state = aggregate.apply(state, { aggregateId: id, version: r.version, type: r.type, data: JSON.parse(r.data), recordedAt: r.recorded_at });
      version = r.version;
    }
    return { state, version };
  };

  const append = writer.transaction((id: string, expected: number, events: NewEvent[]): number => {
    const { v } = writer.prepare("SELECT COALESCE(MAX(version), 0) AS v FROM events WHERE aggregate_id = ?").get(id) as { v: number };
    if (v !== expected) throw new ConcurrencyError(`${id}: expected ${expected}, found ${v}`);
    const at = new Date().toISOString();
    const ins = writer.prepare("INSERT INTO events VALUES (?, ?, ?, ?, ?)");
    events.forEach((e, i) => ins.run(id, expected + i + 1, e.type, JSON.stringify(e.data), at));
    const after = expected + events.length;
    if (after % every < events.length) {
      const now = fold(writer, id);
      writer.prepare("INSERT INTO snapshots VALUES (?, ?, ?, ?)").run(id, now.version, JSON.stringify(now.state), at);
      writer
        .prepare(
          `DELETE FROM snapshots WHERE aggregate_id = @id AND version IN (
             SELECT version FROM (SELECT version, ROW_NUMBER() OVER (ORDER BY version DESC) AS n FROM snapshots WHERE aggregate_id = @id) WHERE n > @keep)`,
        )
        .run({ id, keep });
    }
    return after;
  });
  const load = reader.transaction((id: string) => fold(reader, id));

  return {
    async append(id, expected, events) {
      try {
        return append.immediate(id, expected, events);
      } catch (e) {
        if (String((e as { code?: unknown }).code).startsWith("SQLITE_CONSTRAINT")) throw new ConcurrencyError(`${id}: version taken`);
        throw e;
      }
    },
    async load(id) {
      return load(id);
    },
    async close() {
      reader.close();
      writer.close();
    },
  };
}
