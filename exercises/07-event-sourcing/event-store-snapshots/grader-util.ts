/**
 * The event-store grader's world: the aggregate it hands the learner's store (grader callbacks,
 * synchronous), the grader's own log of what was accepted (the oracle), its own SQLite
 * connection (the only observation of the database that counts), and the helpers that call
 * the learner's store in its host and put what they saw into words.
 */
import Database from "better-sqlite3";
import { readdirSync, readlinkSync, statSync } from "node:fs";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import { CheckFailure, HostGone, describeValue, processTree } from "../../../src/kit/index.ts";
import type { CheckContext, Host, Rng } from "../../../src/kit/index.ts";
import type { Aggregate, CreateEventStore, EventStore, NewEvent, RecordedEvent } from "../../../src/contracts/event-store-snapshots.ts";

export interface Submission {
  createEventStore: CreateEventStore;
}
export type T = CheckContext<Submission>;

/** Generous for a loaded box: a correct append or load of a few hundred events takes milliseconds. */
export const CALL_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// The aggregate: a bank account whose apply is NOT idempotent (balance, count and an
// order-sensitive digest all move), so an event applied twice, skipped or out of order always
// shows in the state.

export interface Account {
  balance: number;
  count: number;
  lastType: string | null;
  lastVersion: number;
  digest: number;
}

/** What the grader appended and the store accepted (or the grader wrote itself): the truth. */
export interface Logged {
  version: number;
  type: string;
  data: { amount: number; memo: string };
  /** Wall-clock bounds (ms) of the append that wrote it: its recorded_at must fall inside. */
  within: [number, number];
}

export const P = 1_000_000_007;

export function initialAccount(): Account {
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

export function fold(from: Account, events: readonly Logged[]): Account {
  return events.reduce(applyPure, from);
}

/** The state after events 1..version of the grader's own log. */
export function replay(truth: readonly Logged[], version: number): Account {
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
 * The aggregate passed to createEventStore. Its functions run in the grader: the contract makes
 * them synchronous (the store calls them inside its SQLite transaction), so they are `t.sync`
 * callbacks and the learner's host blocks on each until the grader has answered. It records the
 * versions `apply` sees while the grader counts a load, any malformed input, and lets a check
 * act at an exact apply call (read the database from outside, SIGKILL the host).
 */
export class Bank {
  counting = false;
  applied: { aggregateId: unknown; version: unknown }[] = [];
  problems: string[] = [];
  /**
   * Runs at every apply call, before the grader answers. What it returns replaces the answer
   * (a promise that settles only once the host is dead: the host never gets a reply).
   */
  onApply: ((event: RecordedEvent) => unknown) | null = null;
  readonly aggregate: Aggregate<Account>;

  constructor(t: T) {
    this.aggregate = {
      initial: t.sync(() => initialAccount()),
      apply: t.sync((state: Account, event: RecordedEvent): Account => {
        if (this.counting) this.applied.push({ aggregateId: event?.aggregateId, version: event?.version });
        const hook = this.onApply?.(event);
        if (hook !== undefined) return hook as Account;
        return this.applyChecked(state, event);
      }),
    };
  }

  private applyChecked(state: Account, event: RecordedEvent): Account {
    const data = event?.data as { amount?: unknown } | null | undefined;
    if (!isAccount(state)) {
      this.problem(`apply() received the state ${describeValue(state)}; it must be initial() or a snapshot's state parsed with JSON.parse`);
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
      this.problem(`apply() received event ${event.version} with data ${describeValue(event.data)}; data must be the appended value, parsed back with JSON.parse`);
      return state;
    }
    return applyPure(state, { version: event.version, type: event.type, data: { amount: data.amount } });
  }

  private problem(text: string): void {
    if (this.problems.length < 3) this.problems.push(text);
  }

  assertClean(t: T): void {
    if (this.problems.length) t.fail(this.problems[0]! + ".");
  }
}

// ---------------------------------------------------------------------------------------------
// Data: events and aggregate ids with the characters naive code breaks on.

const MEMOS = ["rent", 'say "hi"', "naïve café ☕", "line\nbreak", "{not json}", "50% off", "back\\slash", ""];

export function newEvent(rng: Rng): NewEvent & { data: { amount: number; memo: string } } {
  return {
    type: rng.next() < 0.7 ? "Deposited" : "Withdrawn",
    data: { amount: rng.int(1, 500), memo: rng.pick(MEMOS) },
  };
}

export function newEvents(rng: Rng, n: number): (NewEvent & { data: { amount: number; memo: string } })[] {
  return Array.from({ length: n }, () => newEvent(rng));
}

/**
 * An aggregate id with a quote, a colon, a space and a non-ASCII letter in it: the contract says
 * ids are arbitrary strings, and these are the characters SQL built by hand breaks on.
 */
export function accountId(rng: Rng): string {
  const n = rng.int(100, 999);
  return rng.pick([`acct:${n} "o'brien"`, `konto:${n} müller's`, `acct:${n}: it's ☕`, `ACCT ${n}:"x"`]);
}

/** Random batch sizes in 1..max that add up to exactly `total`. */
export function split(rng: Rng, total: number, max: number): number[] {
  const out: number[] = [];
  let left = total;
  while (left > 0) {
    const n = Math.min(left, rng.int(1, max));
    out.push(n);
    left -= n;
  }
  return out;
}

/** An id as a message shows it: quoted, with its escapes, so a trailing space or a quote is visible. */
export function q(id: string): string {
  return JSON.stringify(id);
}

/** One aggregate's stream as the grader drives it. */
export class Stream {
  readonly truth: Logged[] = [];
  /** [before, after] of every append the learner's store accepted (the grader's own inserts take no snapshot). */
  readonly appends: [number, number][] = [];
  constructor(readonly id: string) {}

  get version(): number {
    return this.truth.length;
  }

  record(events: readonly NewEvent[], within: [number, number]): void {
    const before = this.version;
    events.forEach((e, i) => this.truth.push({ version: before + i + 1, type: e.type, data: e.data as Logged["data"], within }));
  }

  /** The snapshot versions the contract asks for, given the appends so far. */
  expectedSnapshots(every = 100, keep = 3): number[] {
    const all = this.appends.filter(([b, a]) => Math.floor(b / every) < Math.floor(a / every)).map(([, a]) => a);
    return all.slice(-keep);
  }

  latestSnapshot(every = 100, keep = 3): number {
    return this.expectedSnapshots(every, keep).at(-1) ?? 0;
  }
}

// ---------------------------------------------------------------------------------------------
// The learner's store, living in a host

export function isConcurrencyError(e: unknown): boolean {
  return typeof e === "object" && e !== null && (e as { name?: unknown }).name === "ConcurrencyError";
}

export function errorText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return `${e.name}: ${e.message}${typeof code === "string" && !e.message.includes(code) ? ` (${code})` : ""}`;
  }
  return describeValue(e);
}

let files = 0;
/** A database file of this check's own in `host`'s folder (a shared learner host serves many checks). */
export function dbFileIn(t: T, host: Host): string {
  return join(host.dir, `events-${t.seed.toString(36)}-${++files}.db`);
}

/**
 * A database file that every host of this check may open: `t.sharedDir` (engine b24942f) is
 * bound writable into each of them, so two writer PROCESSES share one SQLite file. (A host's own
 * `host.dir` is private to it.)
 */
export function sharedDbPath(t: T): string {
  return join(t.sharedDir, `events-${t.seed.toString(36)}-${++files}.db`);
}

/** The learner's store as the grader holds it: every method a call into its host, so async. */
export type Store = { [K in keyof EventStore<Account>]: (...args: Parameters<EventStore<Account>[K]>) => Promise<Awaited<ReturnType<EventStore<Account>[K]>>> };

export interface StoreOptions {
  snapshotEvery?: number;
  keepSnapshots?: number;
}

/** A store the learner's code built in `host`, on `dbPath`. Closed when the check ends. */
export async function openStore(t: T, host: Host, dbPath: string, bank: Bank, extra: StoreOptions = {}): Promise<Store> {
  const store = await t.within(
    "createEventStore()",
    CALL_MS,
    host.call<Store>("createEventStore", { dbPath, aggregate: bank.aggregate, ...extra }),
  );
  if (typeof store !== "object" || store === null || typeof store.append !== "function" || typeof store.load !== "function") {
    t.fail(`createEventStore() returned ${describeValue(store)}; it must return an object with append, load and close.`);
  }
  t.defer(() => (host.alive ? store.close() : undefined));
  return store;
}

export function appendLabel(id: string, expected: number, n: number): string {
  return `append(${q(id)}, ${expected}, [${n} event${n === 1 ? "" : "s"}])`;
}

/** An append the contract says must succeed; records it in the stream's truth. */
export async function appendOk(t: T, store: Store, bank: Bank, s: Stream, events: NewEvent[]): Promise<number> {
  const expected = s.version;
  const label = appendLabel(s.id, expected, events.length);
  let result: unknown;
  const started = Date.now();
  try {
    result = await t.within(label, CALL_MS, store.append(s.id, expected, events));
  } catch (e) {
    if (e instanceof CheckFailure || e instanceof HostGone) throw e;
    if (isConcurrencyError(e)) {
      t.fail(`${label} threw a ConcurrencyError, but ${q(s.id)} was at version ${expected} (the grader counts its own appends): ${errorText(e)}.`);
    }
    t.fail(`${label} threw ${errorText(e)}; ${q(s.id)} is at version ${expected}, so it must append the events.`);
  }
  bank.assertClean(t);
  const want = expected + events.length;
  if (result !== want) {
    t.fail(`${label} returned ${describeValue(result)}; it must return the new version, ${want} (the versions are ${expected + 1}–${want}).`);
  }
  s.record(events, [started, Date.now()]);
  s.appends.push([expected, want]);
  return want;
}

/** Runs one batch per size, with fresh random events. `after` runs after each append. */
export async function appendBatches(
  t: T,
  store: Store,
  bank: Bank,
  s: Stream,
  sizes: number[],
  after?: () => void | Promise<void>,
): Promise<void> {
  for (const n of sizes) {
    await appendOk(t, store, bank, s, newEvents(t.rng, n));
    if (after) await after();
  }
}

/** An append the contract says must be refused with a ConcurrencyError. */
export async function appendRefused(t: T, store: Store, id: string, expected: number, events: NewEvent[], why: string): Promise<void> {
  const label = appendLabel(id, expected, events.length);
  let result: unknown;
  try {
    result = await t.within(label, CALL_MS, store.append(id, expected, events));
  } catch (e) {
    if (e instanceof CheckFailure || e instanceof HostGone) throw e;
    if (isConcurrencyError(e)) return;
    t.fail(`${label} threw ${errorText(e)}; it must throw a ConcurrencyError (an error whose name is "ConcurrencyError") because ${why}.`);
  }
  t.fail(`${label} returned ${describeValue(result)} instead of throwing a ConcurrencyError, although ${why}. Without that check two writers silently overwrite each other's decisions.`);
}

/** "3–7, 9, 9" */
export function ranges(vs: readonly unknown[]): string {
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

export function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let v = from; v <= to; v++) out.push(v);
  return out;
}

/**
 * Loads through the learner's store while counting the apply calls, then checks the version, the
 * exact sequence of events applied (latestSnapshot+1 .. N) and the state.
 */
export async function loadExpect(
  t: T,
  store: Store,
  bank: Bank,
  s: Stream,
  opts: { snapshot: number; state?: Account; context?: string },
): Promise<void> {
  const n = s.version;
  const S = opts.snapshot;
  const label = `load(${q(s.id)})`;
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
  if (foreign) t.fail(`${label} applied an event of aggregate ${describeValue(foreign.aggregateId)}: a load must read only its own aggregate's events (compare aggregate_id exactly, with =).`);
  if (l.version !== n) {
    t.fail(`${label}${ctx} returned version ${describeValue(l.version)}; ${q(s.id)} has ${n} events, so its version is ${n}.`);
  }
  const versions = applied.map((a) => a.version);
  const want = range(S + 1, n);
  if (!isDeepStrictEqual(versions, want)) {
    const saw =
      versions.length === 0
        ? "apply() was not called"
        : `apply() was called for event${versions.length === 1 ? "" : "s"} ${ranges(versions)} (${versions.length} call${versions.length === 1 ? "" : "s"})`;
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
// The grader's own view of the database: a connection of its own, in the grading process.

interface EventRowOut {
  version: number;
  type: string;
  data: string;
  recorded_at: unknown;
}

const SCHEMA_TEXT =
  "Keep the schema from the scaffold: events(aggregate_id, version, type, data, recorded_at) and snapshots(aggregate_id, version, state, created_at).";

export class Outside {
  readonly db: Database.Database;
  constructor(
    private readonly t: T,
    readonly path: string,
  ) {
    try {
      this.db = new Database(path, { fileMustExist: true });
    } catch (e) {
      t.fail(`The grader could not open ${path} on its own connection (${errorText(e)}); createEventStore must create the database at options.dbPath.`);
    }
    this.db.pragma("busy_timeout = 5000");
    t.defer(() => this.db.close());
  }

  private query<R>(what: string, sql: string, ...params: unknown[]): R[] {
    try {
      return this.db.prepare(sql).all(...params) as R[];
    } catch (e) {
      this.t.fail(`The grader could not read the ${what} table on its own connection (${errorText(e)}). ${SCHEMA_TEXT}`);
    }
  }

  run(sql: string, ...params: unknown[]): void {
    this.db.prepare(sql).run(...params);
  }

  events(id: string): EventRowOut[] {
    return this.query<EventRowOut>("events", "SELECT version, type, data, recorded_at FROM events WHERE aggregate_id = ? ORDER BY version", id);
  }

  eventVersions(id: string): number[] {
    return this.query<{ version: number }>("events", "SELECT version FROM events WHERE aggregate_id = ? ORDER BY version", id).map((r) => r.version);
  }

  snapshotVersions(id: string): number[] {
    return this.query<{ version: number }>("snapshots", "SELECT version FROM snapshots WHERE aggregate_id = ? ORDER BY version", id).map((r) => r.version);
  }

  snapshots(id: string): { version: number; state: string }[] {
    return this.query("snapshots", "SELECT version, state FROM snapshots WHERE aggregate_id = ? ORDER BY version", id);
  }

  /** The grader appends events itself, as another writer process would (no snapshot: it is not a store). */
  insertEvents(s: Stream, events: readonly NewEvent[]): void {
    const now = new Date().toISOString();
    const stmt = this.db.prepare("INSERT INTO events (aggregate_id, version, type, data, recorded_at) VALUES (?, ?, ?, ?, ?)");
    events.forEach((e, i) => stmt.run(s.id, s.version + i + 1, e.type, JSON.stringify(e.data), now));
    s.record(events, [Date.parse(now), Date.parse(now)]);
  }

  /**
   * Whether the events table has a primary key or a UNIQUE constraint on exactly
   * (aggregate_id, version): what makes two processes unable to store one version twice.
   */
  hasUniqueVersionKey(): boolean {
    const key = ["aggregate_id", "version"];
    const same = (cols: string[]) => cols.length === 2 && key.every((k) => cols.includes(k));
    const pk = (this.db.prepare("SELECT name, pk FROM pragma_table_info('events')").all() as { name: string; pk: number }[])
      .filter((c) => c.pk > 0)
      .map((c) => c.name.toLowerCase());
    if (same(pk)) return true;
    const indexes = this.db.prepare("SELECT name, \"unique\" AS u FROM pragma_index_list('events')").all() as { name: string; u: number }[];
    for (const ix of indexes.filter((i) => i.u === 1)) {
      const cols = (this.db.prepare("SELECT name FROM pragma_index_info(?)").all(ix.name) as { name: string | null }[]).map((c) => String(c.name).toLowerCase());
      if (same(cols)) return true;
    }
    return false;
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

/** Versions as a sentence that points at repeats: "1–7, 8 (twice), 9". */
function versionsText(vs: readonly number[]): string {
  const dup = vs.find((v, i) => vs.indexOf(v) !== i);
  return dup === undefined ? ranges(vs) : `${ranges(vs)} (version ${dup} is there ${vs.filter((v) => v === dup).length} times)`;
}

/** ISO-8601 date and time with a zone, as Date.prototype.toISOString writes it (whole seconds allowed). */
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
/**
 * How far recorded_at may lie outside the append's own time: what its precision drops (a time
 * written in whole seconds is up to 999 ms early), plus 250 ms for a learner who reads a clock
 * other than Date.now() (performance.timeOrigin + performance.now() drifts from it). The learner's
 * host reads the same system clock as the grader, and the grader's window brackets the call.
 */
export function clockSlackMs(recordedAt: string): number {
  return (/:\d{2}\.\d+/.test(recordedAt) ? 1 : 1000) + 250;
}

/** The events table holds exactly the grader's log for `s`: versions 1..N, types and data. */
export function expectEventRows(t: T, out: Outside, s: Stream, when: string): void {
  const rows = out.events(s.id);
  const versions = rows.map((r) => r.version);
  if (!isDeepStrictEqual(versions, range(1, s.version))) {
    t.fail(
      `${when}, the events table holds versions ${versionsText(versions)} for ${q(s.id)}; the accepted appends add up to exactly ${ranges(range(1, s.version))}. Versions are 1, 2, 3… per aggregate, each once, with no gaps and nothing from refused appends.`,
    );
  }
  for (const [i, row] of rows.entries()) {
    const want = s.truth[i]!;
    const data = parseJson(t, row.data, `The data column of ${q(s.id)} event ${row.version}`);
    if (row.type !== want.type || !isDeepStrictEqual(data, want.data)) {
      t.fail(
        `${when}, ${q(s.id)} event ${row.version} is stored as type ${describeValue(row.type)}, data ${describeValue(row.data)}; the appended event was type ${describeValue(want.type)}, data ${describeValue(JSON.stringify(want.data))}.`,
      );
    }
    const at = typeof row.recorded_at === "string" && ISO.test(row.recorded_at) ? Date.parse(row.recorded_at) : NaN;
    if (Number.isNaN(at)) {
      t.fail(`${q(s.id)} event ${row.version} has recorded_at ${describeValue(row.recorded_at)}; store the time of the append as ISO-8601 text (new Date().toISOString()).`);
    }
    const [from, to] = want.within;
    const slack = clockSlackMs(String(row.recorded_at));
    if (at < from - slack || at > to + slack) {
      t.fail(
        `${q(s.id)} event ${row.version} has recorded_at ${describeValue(row.recorded_at)}, but the append that wrote it ran from ${new Date(from).toISOString()} to ${new Date(to).toISOString()}; recorded_at is the time of the append.`,
      );
    }
  }
}

/** The snapshots table holds exactly `versions` for `s`, each with the state at its version. */
export function expectSnapshots(t: T, out: Outside, s: Stream, versions: number[], when: string, rule: string): void {
  const got = out.snapshotVersions(s.id);
  if (!isDeepStrictEqual(got, versions)) {
    t.fail(`${when}, ${q(s.id)} has snapshots at ${got.length ? `versions ${ranges(got)}` : "no version"}; expected ${versions.length ? ranges(versions) : "none"}. ${rule}`);
  }
  for (const row of out.snapshots(s.id)) {
    const state = parseJson(t, row.state, `The state column of ${q(s.id)} snapshot ${row.version}`);
    const want = replay(s.truth, row.version);
    if (!isDeepStrictEqual(state, want)) {
      t.fail(
        `The snapshot of ${q(s.id)} at version ${row.version} holds ${describeValue(state, 200)}, but the state after events 1–${row.version} is ${describeValue(want, 200)}. A snapshot must hold the state at exactly its version, taken after that append's events.`,
      );
    }
  }
}

export const SNAPSHOT_RULE =
  "A snapshot is due when an append moves the version from before to after with floor(before / 100) < floor(after / 100); it is taken at `after`, and only the latest 3 per aggregate are kept.";

export function transitionText(s: Stream): string {
  const last = s.appends.at(-1);
  return last ? `After the append that took ${q(s.id)} from version ${last[0]} to ${last[1]}` : "At the start";
}

// ---------------------------------------------------------------------------------------------
// close(): what the operating system says the learner's process still has open.

/**
 * The database file (or its -wal, -shm, -journal) as file descriptors still open in the host's
 * processes, read from /proc/<pid>/fd: "fd 23 → /…/events.db-wal". `null` where the grader cannot
 * look (no /proc, or the host's descriptors are not readable), so the caller falls back on SQLite.
 */
export function openFdsOn(hostPid: number | undefined, dbPath: string, ids: ReadonlySet<string>): string[] | null {
  if (hostPid === undefined) return null;
  const tree = processTree(hostPid);
  if (!tree) return null;
  const found: string[] = [];
  let readable = false;
  for (const p of tree) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${p}/fd`);
      readable = true;
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target = "";
      try {
        target = readlinkSync(`/proc/${p}/fd/${fd}`);
      } catch {
        continue; // closed meanwhile
      }
      let same = target === dbPath || target.startsWith(`${dbPath}-`) || target.startsWith(`${dbPath} `);
      if (!same && target.startsWith("/")) {
        try {
          const st = statSync(`/proc/${p}/fd/${fd}`);
          same = ids.has(`${st.dev}:${st.ino}`);
        } catch {
          // closed meanwhile, or not a file
        }
      }
      if (same) found.push(`fd ${fd} → ${target}`);
    }
  }
  return readable ? found : null;
}

/** dev:ino of the database file and its companions, as they are now (a WAL is deleted by the last close). */
export function fileIds(dbPath: string): Set<string> {
  const ids = new Set<string>();
  for (const suffix of ["", "-wal", "-shm", "-journal"]) {
    try {
      const st = statSync(dbPath + suffix);
      ids.add(`${st.dev}:${st.ino}`);
    } catch {
      // not there
    }
  }
  return ids;
}
