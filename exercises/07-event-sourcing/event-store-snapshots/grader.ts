import Database from "better-sqlite3";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { CheckFailure, defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { CheckContext, Rng } from "../../../src/kit/index.ts";
import type { Aggregate, CreateEventStore, EventStore, NewEvent, RecordedEvent } from "../../../src/contracts/event-store-snapshots.ts";

interface Submission {
  createEventStore: CreateEventStore;
}
type T = CheckContext<Submission>;

// ---------------------------------------------------------------------------------------------
// The aggregate the grader hands to the learner's store: a bank account whose apply is NOT
// idempotent (balance, count and an order-sensitive digest all move), so applying an event twice,
// skipping one or reordering them always shows in the state.

interface Account {
  balance: number;
  count: number;
  lastType: string | null;
  lastVersion: number;
  digest: number;
}

/** What the grader appended and the store accepted: the truth a load is compared with. */
interface Logged {
  version: number;
  type: string;
  data: { amount: number; memo: string };
}

const P = 1_000_000_007;

function initialAccount(): Account {
  return { balance: 0, count: 0, lastType: null, lastVersion: 0, digest: 7 };
}

function applyPure(s: Account, e: { version: number; type: string; data: { amount: number } }): Account {
  const signed = e.type === "Withdrawn" ? -e.data.amount : e.data.amount;
  return {
    balance: s.balance + signed,
    count: s.count + 1,
    lastType: e.type,
    lastVersion: e.version,
    digest: (((s.digest * 31 + signed * 7 + e.version) % P) + P) % P,
  };
}

function fold(from: Account, events: readonly Logged[]): Account {
  return events.reduce(applyPure, from);
}

/** The state after events 1..version of the grader's own log. */
function replay(truth: readonly Logged[], version: number): Account {
  return fold(initialAccount(), truth.slice(0, version));
}

function isAccount(v: unknown): v is Account {
  const o = v as Partial<Account> | null;
  return (
    typeof o === "object" && o !== null && typeof o.balance === "number" && typeof o.count === "number" &&
    typeof o.lastVersion === "number" && typeof o.digest === "number" && (o.lastType === null || typeof o.lastType === "string")
  );
}

/**
 * The aggregate passed to createEventStore. It records the versions `apply` sees while the grader
 * is watching a load (the "counted from outside" part) and any malformed input it receives.
 */
class Bank {
  counting = false;
  applied: { aggregateId: unknown; version: unknown }[] = [];
  problems: string[] = [];

  readonly aggregate: Aggregate<Account> = {
    initial: () => initialAccount(),
    apply: (state: Account, event: RecordedEvent): Account => {
      if (this.counting) this.applied.push({ aggregateId: event?.aggregateId, version: event?.version });
      const data = event?.data as { amount?: unknown } | null | undefined;
      if (!isAccount(state)) {
        this.problem(
          `apply() received the state ${describeValue(state)}; it must be initial() or a snapshot's state parsed with JSON.parse`,
        );
        return initialAccount();
      }
      if (
        typeof event?.version !== "number" || typeof event.type !== "string" || typeof event.aggregateId !== "string" ||
        typeof event.recordedAt !== "string"
      ) {
        this.problem(
          `apply() received the event ${describeValue(event)}; a RecordedEvent has aggregateId, version (a number), type, data and recordedAt (the recorded_at text)`,
        );
        return state;
      }
      if (typeof data !== "object" || data === null || typeof data.amount !== "number") {
        this.problem(
          `apply() received event ${event.version} with data ${describeValue(event.data)}; data must be the appended value, parsed back with JSON.parse`,
        );
        return state;
      }
      return applyPure(state, { version: event.version, type: event.type, data: { amount: data.amount } });
    },
  };

  private problem(text: string): void {
    if (this.problems.length < 3) this.problems.push(text);
  }

  assertClean(t: T): void {
    if (this.problems.length) t.fail(this.problems[0]! + ".");
  }
}

// ---------------------------------------------------------------------------------------------
// Generating events and plans

const MEMOS = ["rent", 'say "hi"', "naïve café ☕", "line\nbreak", "{not json}", "50% off", "back\\slash", ""];

function newEvent(rng: Rng): NewEvent & { data: { amount: number; memo: string } } {
  return {
    type: rng.next() < 0.7 ? "Deposited" : "Withdrawn",
    data: { amount: rng.int(1, 500), memo: rng.pick(MEMOS) },
  };
}

/** Random batch sizes in 1..max that add up to exactly `total`. */
function split(rng: Rng, total: number, max: number): number[] {
  const out: number[] = [];
  let left = total;
  while (left > 0) {
    const n = Math.min(left, rng.int(1, max));
    out.push(n);
    left -= n;
  }
  return out;
}

/** One aggregate's stream as the grader drives it. */
class Stream {
  readonly truth: Logged[] = [];
  /** [before, after] of every accepted append. */
  readonly appends: [number, number][] = [];
  constructor(readonly id: string) {}

  get version(): number {
    return this.truth.length;
  }

  /** The snapshot versions the contract asks for, given the appends so far. */
  expectedSnapshots(every = 100, keep = 3): number[] {
    const all = this.appends.filter(([b, a]) => Math.floor(b / every) < Math.floor(a / every)).map(([, a]) => a);
    return all.slice(-keep);
  }
}

// ---------------------------------------------------------------------------------------------
// Talking to the learner's store

function isConcurrencyError(e: unknown): boolean {
  return typeof e === "object" && e !== null && (e as { name?: unknown }).name === "ConcurrencyError";
}

function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return describeValue(e);
}

const CALL_MS = 10_000;

async function openStore(t: T, dbPath: string, bank: Bank, extra: { snapshotEvery?: number; keepSnapshots?: number } = {}): Promise<EventStore<Account>> {
  const store = await t.within(
    "createEventStore()",
    CALL_MS,
    t.submission.createEventStore<Account>({ dbPath, aggregate: bank.aggregate, ...extra }),
  );
  if (typeof store !== "object" || store === null || typeof store.append !== "function" || typeof store.load !== "function") {
    t.fail(`createEventStore() returned ${describeValue(store)}; it must return an object with append, load and close.`);
  }
  t.defer(() => store.close());
  return store;
}

function appendLabel(id: string, expected: number, n: number): string {
  return `append("${id}", ${expected}, [${n} event${n === 1 ? "" : "s"}])`;
}

/** An append the contract says must succeed; records it in the stream's truth. */
async function appendOk(t: T, store: EventStore<Account>, bank: Bank, s: Stream, events: NewEvent[]): Promise<number> {
  const expected = s.version;
  const label = appendLabel(s.id, expected, events.length);
  let result: unknown;
  try {
    result = await t.within(label, CALL_MS, store.append(s.id, expected, events));
  } catch (e) {
    if (isConcurrencyError(e)) {
      t.fail(`${label} threw a ConcurrencyError, but "${s.id}" was at version ${expected} (the grader counts its own appends): ${errorText(e)}.`);
    }
    throw e;
  }
  bank.assertClean(t);
  const want = expected + events.length;
  if (result !== want) {
    t.fail(`${label} returned ${describeValue(result)}; it must return the new version, ${want} (the versions are ${expected + 1}–${want}).`);
  }
  events.forEach((e, i) => s.truth.push({ version: expected + i + 1, type: e.type, data: e.data as Logged["data"] }));
  s.appends.push([expected, want]);
  return want;
}

/** Runs one batch per size, with fresh random events. `after` runs after each append. */
async function appendBatches(t: T, store: EventStore<Account>, bank: Bank, s: Stream, sizes: number[], after?: () => void | Promise<void>): Promise<void> {
  for (const n of sizes) {
    await appendOk(t, store, bank, s, Array.from({ length: n }, () => newEvent(t.rng)));
    if (after) await after();
  }
}

/** An append the contract says must be refused with a ConcurrencyError. */
async function appendRefused(t: T, store: EventStore<Account>, id: string, expected: number, events: NewEvent[], why: string): Promise<void> {
  const label = appendLabel(id, expected, events.length);
  let result: unknown;
  try {
    result = await t.within(label, CALL_MS, store.append(id, expected, events));
  } catch (e) {
    if (e instanceof CheckFailure) throw e;
    if (isConcurrencyError(e)) return;
    t.fail(`${label} threw ${errorText(e)}; it must throw a ConcurrencyError (an error whose name is "ConcurrencyError") because ${why}.`);
  }
  t.fail(`${label} returned ${describeValue(result)} instead of throwing a ConcurrencyError, although ${why}. Without that check two writers silently overwrite each other's decisions.`);
}

/** "3–7, 9" */
function ranges(vs: readonly unknown[]): string {
  if (vs.length === 0) return "none";
  const parts: string[] = [];
  let i = 0;
  while (i < vs.length) {
    const start = vs[i];
    let j = i;
    while (typeof vs[j] === "number" && typeof vs[j + 1] === "number" && (vs[j + 1] as number) === (vs[j] as number) + 1) j++;
    parts.push(j > i ? `${String(start)}–${String(vs[j])}` : describeValue(start));
    i = j + 1;
    if (parts.length > 8) {
      parts.push("…");
      break;
    }
  }
  return parts.join(", ");
}

function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let v = from; v <= to; v++) out.push(v);
  return out;
}

/**
 * Loads through the learner's store while counting the apply calls, then checks the version, the
 * exact sequence of events applied (latestSnapshot+1 .. N) and the state.
 */
async function loadExpect(
  t: T,
  store: EventStore<Account>,
  bank: Bank,
  s: Stream,
  opts: { snapshot: number; state?: Account; context?: string },
): Promise<void> {
  const n = s.version;
  const S = opts.snapshot;
  const label = `load("${s.id}")`;
  const ctx = opts.context ? ` ${opts.context}` : "";
  bank.applied = [];
  bank.counting = true;
  let loaded: unknown;
  try {
    loaded = await t.within(label, CALL_MS, store.load(s.id));
  } finally {
    bank.counting = false;
  }
  bank.assertClean(t);
  const applied = bank.applied;
  const l = loaded as { state?: unknown; version?: unknown } | null;
  if (typeof l !== "object" || l === null || !("state" in l) || !("version" in l)) {
    t.fail(`${label} returned ${describeValue(loaded)}; it must return { state, version }.`);
  }
  const foreign = applied.find((a) => a.aggregateId !== s.id);
  if (foreign) t.fail(`${label} applied an event of aggregate ${describeValue(foreign.aggregateId)}: a load must read only its own aggregate's events.`);
  if (l.version !== n) {
    t.fail(`${label}${ctx} returned version ${describeValue(l.version)}; "${s.id}" has ${n} events, so its version is ${n}.`);
  }
  const versions = applied.map((a) => a.version);
  const want = range(S + 1, n);
  if (!isDeepStrictEqual(versions, want)) {
    const saw = versions.length === 0 ? "apply() was not called" : `apply() was called for event${versions.length === 1 ? "" : "s"} ${ranges(versions)} (${versions.length} call${versions.length === 1 ? "" : "s"})`;
    const should =
      want.length === 0
        ? `it must apply no event, because the latest snapshot (version ${S}) already holds all ${n}`
        : S > 0
          ? `it must apply exactly the events after the latest snapshot (version ${S}): ${ranges(want)}`
          : `it must apply events ${ranges(want)}, in order`;
    const first = versions[0];
    let why = "";
    if (S > 0 && isDeepStrictEqual(versions, range(1, n))) {
      why = ` The snapshot at ${S} saved no work: start from the latest snapshot's state and read only events with a higher version.`;
    } else if (S > 0 && isDeepStrictEqual(versions, range(S, n))) {
      why = ` Event ${S} is already inside the snapshot taken at version ${S}; applying it again counts it twice (off by one: version > ${S}, not >=).`;
    } else if (typeof first === "number" && first > 1 && first <= S && isDeepStrictEqual(versions, range(first, n))) {
      why = ` That starts from an older snapshot (version ${first - 1}); the latest snapshot is the one with the highest version, whatever created_at says.`;
    } else if (versions.length === 0 && want.length > 0) {
      why = ` A load must read the database every time and apply the events after the snapshot; it must not answer from memory.`;
    }
    t.fail(`${label}${ctx}: ${saw}; ${should}.${why}`);
  }
  const expected = opts.state ?? replay(s.truth, n);
  if (!isDeepStrictEqual(l.state, expected)) {
    t.fail(`${label}${ctx} returned state ${describeValue(l.state, 220)}; expected ${describeValue(expected, 220)}.`);
  }
}

// ---------------------------------------------------------------------------------------------
// The grader's own view of the database

interface EventRowOut {
  version: number;
  type: string;
  data: string;
  recorded_at: unknown;
}

class Outside {
  readonly db: Database.Database;
  constructor(
    private readonly t: T,
    path: string,
  ) {
    this.db = new Database(path, { fileMustExist: true });
    this.db.pragma("busy_timeout = 5000");
    t.defer(() => this.db.close());
  }

  private query<R>(what: string, sql: string, ...params: unknown[]): R[] {
    try {
      return this.db.prepare(sql).all(...params) as R[];
    } catch (e) {
      this.t.fail(
        `The grader could not read the ${what} table on its own connection (${errorText(e)}). Keep the schema from the scaffold: events(aggregate_id, version, type, data, recorded_at) and snapshots(aggregate_id, version, state, created_at).`,
      );
    }
  }

  run(sql: string, ...params: unknown[]): void {
    this.db.prepare(sql).run(...params);
  }

  events(id: string): EventRowOut[] {
    return this.query<EventRowOut>("events", "SELECT version, type, data, recorded_at FROM events WHERE aggregate_id = ? ORDER BY version", id);
  }

  snapshotVersions(id: string): number[] {
    return this.query<{ version: number }>("snapshots", "SELECT version FROM snapshots WHERE aggregate_id = ? ORDER BY version", id).map((r) => r.version);
  }

  snapshots(id: string): { version: number; state: string }[] {
    return this.query("snapshots", "SELECT version, state FROM snapshots WHERE aggregate_id = ? ORDER BY version", id);
  }
}

function parseJson(t: T, text: unknown, what: string): unknown {
  if (typeof text !== "string") t.fail(`${what} is ${describeValue(text)}; it must be JSON text (JSON.stringify).`);
  try {
    return JSON.parse(text);
  } catch {
    t.fail(`${what} is ${describeValue(text)}, which is not JSON; store JSON.stringify(...) of the value.`);
  }
}

/** The events table holds exactly the grader's log for `s`: versions 1..N, types and data. */
function expectEventRows(t: T, out: Outside, s: Stream, when: string): void {
  const rows = out.events(s.id);
  const versions = rows.map((r) => r.version);
  if (!isDeepStrictEqual(versions, range(1, s.version))) {
    t.fail(
      `${when}, the events table holds versions ${ranges(versions)} for "${s.id}"; the accepted appends add up to exactly ${ranges(range(1, s.version))}. Versions are 1, 2, 3… per aggregate, with no gaps and nothing from refused appends.`,
    );
  }
  for (const [i, row] of rows.entries()) {
    const want = s.truth[i]!;
    const data = parseJson(t, row.data, `The data column of "${s.id}" event ${row.version}`);
    if (row.type !== want.type || !isDeepStrictEqual(data, want.data)) {
      t.fail(
        `${when}, "${s.id}" event ${row.version} is stored as type ${describeValue(row.type)}, data ${describeValue(row.data)}; the appended event was type ${describeValue(want.type)}, data ${describeValue(JSON.stringify(want.data))}.`,
      );
    }
    if (typeof row.recorded_at !== "string" || row.recorded_at === "") {
      t.fail(`"${s.id}" event ${row.version} has recorded_at ${describeValue(row.recorded_at)}; store the time of the append as ISO-8601 text.`);
    }
  }
}

/** The snapshots table holds exactly `versions` for `s`, each with the state at its version. */
function expectSnapshots(t: T, out: Outside, s: Stream, versions: number[], when: string, rule: string): void {
  const got = out.snapshotVersions(s.id);
  if (!isDeepStrictEqual(got, versions)) {
    t.fail(`${when}, "${s.id}" has snapshots at ${got.length ? `versions ${ranges(got)}` : "no version"}; expected ${versions.length ? ranges(versions) : "none"}. ${rule}`);
  }
  for (const row of out.snapshots(s.id)) {
    const state = parseJson(t, row.state, `The state column of "${s.id}" snapshot ${row.version}`);
    const want = replay(s.truth, row.version);
    if (!isDeepStrictEqual(state, want)) {
      t.fail(
        `The snapshot of "${s.id}" at version ${row.version} holds ${describeValue(state, 200)}, but the state after events 1–${row.version} is ${describeValue(want, 200)}. A snapshot must hold the state at exactly its version, taken after that append's events.`,
      );
    }
  }
}

const SNAPSHOT_RULE =
  "A snapshot is due when an append moves the version from before to after with floor(before / 100) < floor(after / 100); it is taken at `after`, and only the latest 3 per aggregate are kept.";

function transitionText(s: Stream): string {
  const last = s.appends.at(-1);
  return last ? `After the append that took "${s.id}" from version ${last[0]} to ${last[1]}` : "At the start";
}

function dbFile(t: T): string {
  return join(t.tmpDir, "events.db");
}

// ---------------------------------------------------------------------------------------------

export default defineGrader<Submission>({
  exports: { createEventStore: "function" },
  checks: [
    {
      name: "an aggregate with no events loads as initial() at version 0",
      hint: "With no snapshot and no events, load returns { state: aggregate.initial(), version: 0 }.",
      async run(t) {
        const bank = new Bank();
        const store = await openStore(t, dbFile(t), bank);
        const n = t.rng.int(1, 9);
        const empty = new Stream(`acct-${n}`);
        await loadExpect(t, store, bank, empty, { snapshot: 0, context: "on an empty store" });
        // Another aggregate with a shared id prefix gets events; ours must still be empty.
        const other = new Stream(`acct-${n}${t.rng.int(0, 9)}`);
        await appendBatches(t, store, bank, other, split(t.rng, t.rng.int(3, 8), 3));
        await loadExpect(t, store, bank, empty, { snapshot: 0, context: `after events were appended to "${other.id}"` });
      },
    },
    {
      name: "appends get versions 1, 2, 3… and a load equals a replay of the events table",
      hint: "Insert each event at expectedVersion + 1, + 2, … and return the last one; load reads the rows back in version order and folds them with aggregate.apply.",
      async run(t) {
        const path = dbFile(t);
        const bank = new Bank();
        const writer = await openStore(t, path, bank);
        const s = new Stream(`acct-${t.rng.int(100, 999)}`);
        await appendBatches(t, writer, bank, s, split(t.rng, t.rng.int(30, 60), 7));
        const out = new Outside(t, path);
        expectEventRows(t, out, s, "After the appends");
        // A second store on the same file sees everything.
        const reader = await openStore(t, path, bank);
        await loadExpect(t, reader, bank, s, { snapshot: 0, context: "from a second store on the same file" });
        // Events another process writes count too: the grader appends three rows itself.
        const now = new Date().toISOString();
        for (let i = 0; i < 3; i++) {
          const e = newEvent(t.rng);
          const version = s.version + 1;
          out.run("INSERT INTO events (aggregate_id, version, type, data, recorded_at) VALUES (?, ?, ?, ?, ?)", s.id, version, e.type, JSON.stringify(e.data), now);
          s.truth.push({ version, type: e.type, data: e.data });
        }
        await loadExpect(t, writer, bank, s, { snapshot: 0, context: "after the grader added 3 events from outside" });
      },
    },
    {
      name: "a snapshot is saved at every 100th event, holding the state at its version",
      hint: "After the events are inserted (same transaction), check whether the append reached a multiple of 100; if so load the state and insert it into snapshots at the new version.",
      async run(t) {
        const path = dbFile(t);
        const bank = new Bank();
        const store = await openStore(t, path, bank);
        const out = new Outside(t, path);
        const s = new Stream(`acct-${t.rng.int(100, 999)}`);
        const check = () => expectSnapshots(t, out, s, s.expectedSnapshots(), transitionText(s), SNAPSHOT_RULE);
        // Land exactly on 100, 200 and 300, then a little past.
        for (const total of [100, 100, 100, t.rng.int(5, 40)]) {
          await appendBatches(t, store, bank, s, split(t.rng, total, 12), check);
        }
      },
    },
    {
      name: "a load starts from the latest snapshot and applies only the events after it",
      hint: "Read the snapshot with the highest version (ORDER BY version DESC LIMIT 1), parse its state, then apply only events with version > that snapshot's version.",
      async run(t) {
        const path = dbFile(t);
        const bank = new Bank();
        const writer = await openStore(t, path, bank);
        const s = new Stream(`acct-${t.rng.int(100, 999)}`);
        await appendBatches(t, writer, bank, s, split(t.rng, t.rng.int(201, 209), 12));
        await appendBatches(t, writer, bank, s, split(t.rng, t.rng.int(10, 40), 8));
        const out = new Outside(t, path);
        const snaps = s.expectedSnapshots();
        expectSnapshots(t, out, s, snaps, `With "${s.id}" at version ${s.version}`, SNAPSHOT_RULE);
        const latest = snaps.at(-1)!;

        const reader = await openStore(t, path, bank);
        await loadExpect(t, reader, bank, s, { snapshot: latest, context: `(${s.version} events, snapshots at ${ranges(snaps)})` });

        // From outside: garble every event at or below the latest snapshot, give that snapshot a
        // marked state, and make the older snapshots look newer by created_at. A load that starts
        // from the latest snapshot and reads only later events is not affected by any of it.
        out.run(
          "UPDATE events SET type = 'Garbled', data = ? WHERE aggregate_id = ? AND version <= ?",
          JSON.stringify({ amount: 987_654, memo: "garbled by the grader" }),
          s.id,
          latest,
        );
        const real = replay(s.truth, latest);
        const marked: Account = { ...real, balance: real.balance + 1_000_000, digest: (real.digest + 424_242) % P };
        out.run("UPDATE snapshots SET state = ? WHERE aggregate_id = ? AND version = ?", JSON.stringify(marked), s.id, latest);
        out.run(
          "UPDATE snapshots SET state = ?, created_at = '2999-12-31T23:59:59.999Z' WHERE aggregate_id = ? AND version < ?",
          JSON.stringify({ ...real, balance: -1, digest: 1 }),
          s.id,
          latest,
        );
        const fresh = await openStore(t, path, bank);
        await loadExpect(t, fresh, bank, s, {
          snapshot: latest,
          state: fold(marked, s.truth.slice(latest)),
          context: `after the grader garbled events 1–${latest} and marked the snapshot at ${latest} (the balance ${real.balance} became ${marked.balance}) from outside`,
        });
      },
    },
    {
      name: "an append that jumps past a multiple of 100 snapshots at its new version",
      hint: "`version % 100 === 0` misses a batch that goes from 95 to 105. Compare Math.floor(before / 100) with Math.floor(after / 100) and snapshot at `after`.",
      async run(t) {
        const path = dbFile(t);
        const bank = new Bank();
        const store = await openStore(t, path, bank);
        const out = new Outside(t, path);
        const s = new Stream(`acct-${t.rng.int(100, 999)}`);
        const check = () => expectSnapshots(t, out, s, s.expectedSnapshots(), transitionText(s), SNAPSHOT_RULE);
        const a = t.rng.int(90, 97);
        await appendBatches(t, store, bank, s, split(t.rng, a, 12), check);
        await appendBatches(t, store, bank, s, [t.rng.int(101, 109) - a], check); // e.g. 95 → 105
        await appendBatches(t, store, bank, s, split(t.rng, 200 - s.version, 12), check); // lands on 200
        await appendBatches(t, store, bank, s, [t.rng.int(401, 460) - 200], check); // 200 → 4xx: one snapshot
        await appendBatches(t, store, bank, s, split(t.rng, t.rng.int(5, 20), 6), check);
        await loadExpect(t, store, bank, s, { snapshot: s.expectedSnapshots().at(-1)! });
      },
    },
    {
      name: "only the latest 3 snapshots of each aggregate are kept",
      hint: "After inserting a snapshot, delete that aggregate's snapshots except the 3 with the highest versions, in the same transaction.",
      async run(t) {
        const path = dbFile(t);
        const bank = new Bank();
        const store = await openStore(t, path, bank);
        const out = new Outside(t, path);
        const n = t.rng.int(1, 9);
        const streams = [new Stream(`acct-${n}`), new Stream(`acct-${n}${t.rng.int(0, 9)}`)];
        const plans = streams.map(() => split(t.rng, t.rng.int(510, 560), 25));
        // Interleave the two aggregates' appends in a seeded order.
        while (plans.some((p) => p.length)) {
          const i = t.rng.pick(plans.map((p, j) => (p.length ? j : -1)).filter((j) => j >= 0));
          await appendBatches(t, store, bank, streams[i]!, [plans[i]!.shift()!]);
          for (const s of streams) {
            const when = s === streams[i] ? transitionText(s) : `After an append to "${streams[i]!.id}"`;
            expectSnapshots(t, out, s, s.expectedSnapshots(), when, SNAPSHOT_RULE);
          }
        }
      },
    },
    {
      name: "a stale or future expected version is refused with a ConcurrencyError and writes nothing",
      hint: "Inside one transaction, read MAX(version) for the aggregate and throw a ConcurrencyError unless it equals expectedVersion, before inserting anything.",
      async run(t) {
        const path = dbFile(t);
        const bank = new Bank();
        const store = await openStore(t, path, bank);
        const out = new Outside(t, path);
        const s = new Stream(`acct-${t.rng.int(100, 999)}`);
        await appendBatches(t, store, bank, s, split(t.rng, t.rng.int(90, 97), 9));
        const events = (n: number) => Array.from({ length: n }, () => newEvent(t.rng));
        const unchanged = (what: string) => {
          expectEventRows(t, out, s, `After ${what}`);
          expectSnapshots(t, out, s, [], `After ${what}`, "A refused append writes nothing: no event and no snapshot.");
        };
        const cur = s.version;
        const behind = t.rng.int(1, cur - 5);
        await appendRefused(t, store, s.id, behind, events(12), `"${s.id}" is at version ${cur}, not ${behind} (a stale read)`);
        unchanged(`the refused append with expected version ${behind}`);
        const ahead = cur + t.rng.int(1, 5);
        await appendRefused(t, store, s.id, ahead, events(3), `"${s.id}" is at version ${cur}, not ${ahead}; accepting it would leave a gap in the versions`);
        unchanged(`the refused append with expected version ${ahead}`);
        await appendRefused(t, store, s.id, 0, events(1), `"${s.id}" already has ${cur} events, so it is not new (expected version 0)`);
        unchanged("the refused append with expected version 0");
        const ghost = new Stream(`${s.id}-new`);
        await appendRefused(t, store, ghost.id, 2, events(2), `"${ghost.id}" has no events, so its version is 0, not 2`);
        expectEventRows(t, out, ghost, "After the refused append to a new aggregate");
        // The right expected version still works, and the refusals left no trace in the snapshot.
        await appendOk(t, store, bank, s, events(t.rng.int(101, 110) - cur));
        expectSnapshots(t, out, s, s.expectedSnapshots(), transitionText(s), SNAPSHOT_RULE);
        expectEventRows(t, out, s, "After the accepted append");
      },
    },
    {
      name: "two stores on one file: the slower writer gets a ConcurrencyError, not a duplicate",
      hint: "Check the version against the database inside the write transaction (not a version remembered in memory), and turn the primary-key violation SQLITE_CONSTRAINT_PRIMARYKEY into a ConcurrencyError.",
      async run(t) {
        const path = dbFile(t);
        const bank = new Bank();
        const a = await openStore(t, path, bank);
        const b = await openStore(t, path, bank);
        const out = new Outside(t, path);
        const s = new Stream(`acct-${t.rng.int(100, 999)}`);
        const ev = (n: number) => Array.from({ length: n }, () => newEvent(t.rng));
        await appendBatches(t, a, bank, s, split(t.rng, t.rng.int(90, 95), 9));
        const seen = s.version;
        await loadExpect(t, b, bank, s, { snapshot: 0, context: "on the second store" });
        await appendOk(t, a, bank, s, ev(2));
        await appendRefused(t, b, s.id, seen, ev(1), `the other store appended versions ${seen + 1}–${seen + 2} after this one read version ${seen}`);
        expectEventRows(t, out, s, "After the second store's stale append");
        // The second store, told the right version, appends across 100 without loading first:
        // its snapshot must hold what the database holds, including the first store's events.
        await appendOk(t, b, bank, s, ev(t.rng.int(101, 106) - s.version));
        expectSnapshots(t, out, s, s.expectedSnapshots(), transitionText(s), SNAPSHOT_RULE);

        // Both at once, with the same expected version: exactly one wins.
        const cur = s.version;
        const [first, second] = t.rng.next() < 0.5 ? [a, b] : [b, a];
        const e1 = ev(2);
        const e2 = ev(1);
        const call = async (st: EventStore<Account>, es: NewEvent[]) => st.append(s.id, cur, es);
        const settled = await t.within(
          "two concurrent append() calls",
          CALL_MS,
          Promise.allSettled([call(first, e1), call(second, e2)]),
        );
        const won = settled.filter((r) => r.status === "fulfilled");
        const lost = settled.filter((r): r is PromiseRejectedResult => r.status === "rejected");
        if (won.length !== 1) {
          t.fail(
            `Two stores each called append("${s.id}", ${cur}, …) at the same time: ${won.length} succeeded (${settled.map((r) => (r.status === "fulfilled" ? `returned ${describeValue(r.value)}` : errorText(r.reason))).join("; ")}). Exactly one may win; the other must get a ConcurrencyError.`,
          );
        }
        if (!isConcurrencyError(lost[0]!.reason)) {
          t.fail(
            `Two stores each called append("${s.id}", ${cur}, …) at the same time; the loser threw ${errorText(lost[0]!.reason)}. It must be a ConcurrencyError: when the primary key refuses the insert, another writer got there first.`,
          );
        }
        const winner = settled[0]!.status === "fulfilled" ? e1 : e2;
        const before = s.version;
        winner.forEach((e, i) => s.truth.push({ version: before + i + 1, type: e.type, data: e.data as Logged["data"] }));
        s.appends.push([before, s.version]);
        if ((won[0] as PromiseFulfilledResult<unknown>).value !== s.version) {
          t.fail(`The winning concurrent append returned ${describeValue((won[0] as PromiseFulfilledResult<unknown>).value)}; the new version is ${s.version}.`);
        }
        expectEventRows(t, out, s, "After the two concurrent appends");
        await loadExpect(t, a, bank, s, { snapshot: s.expectedSnapshots().at(-1)!, context: "after the concurrent appends" });
      },
    },
    {
      name: "aggregates are independent: versions, snapshots and loads never mix",
      hint: "Every query filters on aggregate_id: the current version, the latest snapshot, the events after it and the pruning.",
      async run(t) {
        const path = dbFile(t);
        const bank = new Bank();
        const store = await openStore(t, path, bank);
        const out = new Outside(t, path);
        const n = t.rng.int(1, 9);
        const big = new Stream(`acct-${n}`);
        const small = new Stream(`acct-${n}${t.rng.int(0, 9)}`);
        const plans = new Map([
          [big, split(t.rng, t.rng.int(105, 140), 10)],
          [small, split(t.rng, t.rng.int(30, 70), 10)],
        ]);
        while ([...plans.values()].some((p) => p.length)) {
          const s = t.rng.pick([...plans.keys()].filter((k) => plans.get(k)!.length));
          await appendBatches(t, store, bank, s, [plans.get(s)!.shift()!]);
        }
        for (const s of [big, small]) {
          expectEventRows(t, out, s, "After interleaved appends to two aggregates");
          expectSnapshots(t, out, s, s.expectedSnapshots(), "After interleaved appends to two aggregates", SNAPSHOT_RULE);
        }
        const reader = await openStore(t, path, bank);
        await loadExpect(t, reader, bank, small, { snapshot: 0, context: `(it has no snapshot; "${big.id}" has one)` });
        await loadExpect(t, reader, bank, big, { snapshot: big.expectedSnapshots().at(-1)! });
      },
    },
    {
      name: "snapshotEvery and keepSnapshots options are honored",
      hint: "Use options.snapshotEvery ?? 100 and options.keepSnapshots ?? 3 instead of fixed numbers.",
      async run(t) {
        const path = dbFile(t);
        const every = t.rng.int(7, 13);
        const keep = 2;
        const bank = new Bank();
        const opts = { snapshotEvery: every, keepSnapshots: keep };
        const store = await openStore(t, path, bank, opts);
        const out = new Outside(t, path);
        const s = new Stream(`acct-${t.rng.int(100, 999)}`);
        const rule = `With snapshotEvery ${every} and keepSnapshots ${keep}, a snapshot is due when floor(before / ${every}) < floor(after / ${every}), and the latest ${keep} are kept.`;
        await appendBatches(t, store, bank, s, split(t.rng, t.rng.int(60, 80), 5), () =>
          expectSnapshots(t, out, s, s.expectedSnapshots(every, keep), transitionText(s), rule),
        );
        const reader = await openStore(t, path, bank, opts);
        await loadExpect(t, reader, bank, s, { snapshot: s.expectedSnapshots(every, keep).at(-1)! });
      },
    },
  ],
});
