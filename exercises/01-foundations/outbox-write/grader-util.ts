// The grader's side of the outbox-write exercise. It owns the database's schema, hands the
// learner's order service a clock and a bus of its own, and judges only from what it sees itself:
//   - the orders and outbox tables on its own SQLite connection, after every request, compared
//     with its own model of what the requests must have done;
//   - every write the learner's code makes to those tables: BEFORE triggers the grader put on
//     them call a SQL function whose body is a synchronous grader callback, so the learner's
//     process is blocked inside that write while the grader decides (go on, make the write fail,
//     or SIGKILL the process right there, between the state write and the outbox write);
//   - the WAL, pinned from the start so that every commit stays in it: the database as a crash
//     right after each commit would leave it (kit crash-image.ts);
//   - the clock's readings (a virtual clock far from the real one), and every call to the bus,
//     which must be none.
import { isDeepStrictEqual } from "node:util";
import { join } from "node:path";
import Database from "better-sqlite3";
import { CheckFailure, HostGone, WalPin, describeValue, walCommitEndsOf, writeCrashImage } from "../../../src/kit/index.ts";
import type { CheckContext, Host, Rng } from "../../../src/kit/index.ts";
import type { CreateOrderService, OrderLine, PlaceOrder } from "../../../src/contracts/outbox-write.ts";

export interface Submission {
  createOrderService: CreateOrderService;
}
export type T = CheckContext<Submission>;

/** A request is a couple of SQLite statements: milliseconds. Generous for a loaded box. */
export const CALL_MS = 10_000;
const HOOK = "msglab_write";
const DB_PRAGMAS = ["journal_mode = WAL", "busy_timeout = 5000"];

export const SCHEMA = `
  CREATE TABLE orders (
    id            TEXT PRIMARY KEY,
    customer_id   TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    total_cents   INTEGER NOT NULL,
    cancel_reason TEXT
  );
  CREATE TABLE outbox (
    id           TEXT PRIMARY KEY,
    aggregate_id TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    processed_at TEXT,
    retry_count  INTEGER NOT NULL DEFAULT 0,
    error        TEXT
  );
  -- The grader's own writes (it competes for the write lock); not the learner's.
  CREATE TABLE grader_ticks (n INTEGER PRIMARY KEY, at TEXT);
`;

function hookTriggers(): string {
  const out: string[] = [];
  for (const table of ["orders", "outbox"]) {
    for (const op of ["INSERT", "UPDATE", "DELETE"]) {
      const row = op === "DELETE" ? "OLD" : "NEW";
      const id = table === "orders" ? `${row}.id` : `${row}.aggregate_id`;
      out.push(`CREATE TRIGGER msglab_${op.toLowerCase()}_${table} BEFORE ${op} ON ${table} BEGIN SELECT ${HOOK}('${table}', '${op}', ${id}); END;`);
    }
  }
  return out.join("\n");
}

export const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;
export const ISO_MS_Z = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

export function q(s: unknown): string {
  return typeof s === "string" ? JSON.stringify(s) : describeValue(s);
}

export function errorText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return `${e.name}: ${e.message}${typeof code === "string" && !e.message.includes(code) ? ` (${code})` : ""}`;
  }
  return describeValue(e);
}

export function isCheckFailure(e: unknown): boolean {
  return e instanceof CheckFailure || (e as Error | null)?.name === "CheckFailure";
}

const isRejected = (e: unknown) => (e as Error | null)?.name === "OrderRejected";

// ---------------------------------------------------------------------------------------------
// Data with the characters naive code breaks on (and JSON built by hand).

const TEXTS = [`o'brien`, `say "hi"`, `naïve café ☕`, `line\nbreak`, `tab\there`, `back\\slash`, `{not json}`, `</script>`, `\u2028sep`, `50% off_`, `emoji 🧾`, ``];

let serial = 0;
export function newOrder(rng: Rng, lines = rng.int(1, 4)): PlaceOrder {
  const n = ++serial;
  const tag = rng.int(100, 999);
  const mk = (i: number): OrderLine => ({
    sku: `SKU-${tag}-${i} ${rng.pick(TEXTS)}`,
    quantity: rng.pick([1, rng.int(2, 9), rng.int(10, 250)]),
    unitPriceCents: rng.pick([0, rng.int(1, 99), rng.int(100, 99_999), rng.int(100_000, 2_500_000)]),
  });
  return {
    orderId: `ord:${tag}-${n} ${rng.pick(TEXTS)}`,
    customerId: `cust ${n} ${rng.pick(TEXTS)}`,
    lines: Array.from({ length: lines }, (_, i) => mk(i + 1)),
  };
}

export function newReason(rng: Rng): string {
  return `${rng.pick(["changed my mind", "found it cheaper", "duplicate order", "wrong size"])}: ${rng.pick(TEXTS)} ${rng.pick(TEXTS)}`;
}

export const totalOf = (cmd: PlaceOrder) => cmd.lines.reduce((s, l) => s + l.quantity * l.unitPriceCents, 0);

// ---------------------------------------------------------------------------------------------
// The world of one check

interface OrderModel {
  customerId: string;
  status: "placed" | "cancelled";
  total: number;
  reason: string | null;
}

/** An outbox row the requests so far must have written, once. */
interface ExpectedEvent {
  aggregateId: string;
  type: "order.placed" | "order.cancelled";
  payload: unknown;
  /** The clock readings its request could have used, or null when unknown (requests at once in one process). */
  readings: number[] | null;
  /** Bounds of the clock over the request's lifetime. */
  span: [number, number];
  what: string;
}

export interface Write {
  table: string;
  op: string;
  id: unknown;
}

/** What the check does at a write of the learner's: throw (the write fails) or kill the process right there. */
export type WriteAction = "throw" | "kill" | undefined;

export interface Req {
  what: string;
  writes: Write[];
  readings: number[];
  /** The grader acted at the second table's write. */
  struck: boolean;
  /** That write. */
  struckAt?: Write;
  started: number;
}

export interface Proc {
  n: number;
  host: Host;
  service: { placeOrder(cmd: PlaceOrder): Promise<void>; cancelOrder(id: string, reason: string): Promise<void> };
  killed: boolean;
  /** The request running (sequential requests only). */
  req: Req | null;
  /** Every clock reading this process took. */
  readings: number[];
  /** The last request that ran (sequential requests). */
  lastReq: Req | null;
}

export class InjectedWriteError extends Error {
  override name = "DiskFull";
  readonly code = "SQLITE_FULL_INJECTED";
}

export class World {
  readonly dbPath: string;
  readonly db: Database.Database;
  readonly procs: Proc[] = [];
  readonly orders = new Map<string, OrderModel>();
  readonly events: ExpectedEvent[] = [];
  readonly published: { proc: number; type: unknown; payload: unknown }[] = [];
  pin: WalPin | null = null;
  /** The check's say at a write of the learner's (its process is blocked there). */
  onWrite: ((proc: Proc, w: Write) => WriteAction | Promise<WriteAction>) | null = null;
  /** Only at the write on the second table of a request: the point between the two writes. */
  onSecondWrite: ((proc: Proc, w: Write, req: Req) => WriteAction) | null = null;
  private time: number;

  constructor(
    readonly t: T,
    opts: { pin?: boolean; file?: string } = {},
  ) {
    this.dbPath = join(t.sharedDir, opts.file ?? "orders.db");
    const setup = new Database(this.dbPath);
    setup.pragma("journal_mode = WAL");
    setup.exec(SCHEMA + hookTriggers());
    setup.close();
    if (opts.pin) {
      this.pin = WalPin.pin(this.dbPath);
      t.defer(() => this.pin?.close());
    }
    this.db = new Database(this.dbPath);
    this.db.pragma("busy_timeout = 5000");
    this.db.function(HOOK, { varargs: true }, () => null);
    t.defer(() => this.db.close());
    // Far from the real clock (a Date.now() shows), with milliseconds that matter.
    this.time = Date.UTC(2031 + t.rng.int(0, 5), t.rng.int(0, 11), t.rng.int(1, 28), t.rng.int(0, 23), t.rng.int(0, 59), t.rng.int(0, 59), t.rng.int(0, 999));
  }

  /** Time passes between requests. */
  advance(): void {
    this.time += this.t.rng.int(1_000, 90_000);
  }

  get now(): number {
    return this.time;
  }

  private read(proc: Proc): number {
    this.time += this.t.rng.int(1, 9);
    proc.readings.push(this.time);
    proc.req?.readings.push(this.time);
    return this.time;
  }

  private write(proc: Proc, table: unknown, op: unknown, id: unknown): unknown {
    const w: Write = { table: String(table), op: String(op), id };
    const req = proc.req;
    let action: WriteAction | Promise<WriteAction>;
    if (req) {
      const second = !req.struck && req.writes.length > 0 && req.writes.some((x) => x.table !== w.table);
      req.writes.push(w);
      if (second && this.onSecondWrite) {
        req.struck = true;
        req.struckAt = w;
        action = this.onSecondWrite(proc, w, req);
      }
    }
    action ??= this.onWrite?.(proc, w);
    const act = (a: WriteAction): null | Promise<null> => {
      if (a === "throw") throw new InjectedWriteError(`database or disk is full (the grader's fault, at your ${w.op} on ${w.table})`);
      if (a === "kill") {
        proc.killed = true;
        // Answer only once the host is dead: it never runs another instruction.
        return proc.host.kill().then(() => null);
      }
      return null;
    };
    return action instanceof Promise ? action.then(act) : act(action);
  }

  /** The learner's service in `host`, on this world's database. */
  async open(host: Host): Promise<Proc> {
    const t = this.t;
    const proc: Proc = { n: this.procs.length + 1, host, service: null as unknown as Proc["service"], killed: false, req: null, readings: [], lastReq: null };
    this.procs.push(proc);
    const db = await host.cap("sqlite.open", { path: this.dbPath, pragmas: DB_PRAGMAS });
    await host.cap("sqlite.function", { db, name: HOOK, fn: t.sync((table: unknown, op: unknown, id: unknown) => this.write(proc, table, op, id)) });
    const deps = {
      db,
      clock: { now: t.sync(() => this.read(proc)) },
      bus: {
        publish: async (type: unknown, payload: unknown) => {
          this.published.push({ proc: proc.n, type, payload });
        },
      },
    };
    const service = await t.within("createOrderService()", CALL_MS, host.call<Proc["service"]>("createOrderService", deps));
    if (typeof service !== "object" || service === null || typeof service.placeOrder !== "function" || typeof service.cancelOrder !== "function") {
      t.fail(`createOrderService() returned ${describeValue(service)}; it must return an object with placeOrder(cmd) and cancelOrder(orderId, reason).`);
    }
    proc.service = service;
    return proc;
  }

  // -------------------------------------------------------------------------------------------
  // Requests, one at a time in a process

  /** Runs one request in `proc`; resolves with how it settled ("killed" when the grader killed the process). */
  async request(proc: Proc, what: string, run: () => Promise<void>): Promise<{ ok: true } | { ok: false; error: unknown } | { killed: true; req: Req }> {
    this.advance();
    const req: Req = { what, writes: [], readings: [], struck: false, started: this.time };
    proc.req = req;
    try {
      await this.t.within(what, CALL_MS, run());
      return { ok: true };
    } catch (e) {
      if (isCheckFailure(e)) throw e;
      if (e instanceof HostGone && proc.killed) return { killed: true, req };
      if (e instanceof HostGone) throw e;
      return { ok: false, error: e };
    } finally {
      proc.req = null;
      proc.lastReq = req;
    }
  }

  placeLabel(cmd: PlaceOrder): string {
    return `placeOrder({ orderId: ${q(cmd.orderId)}, … ${cmd.lines.length} line${cmd.lines.length === 1 ? "" : "s"} })`;
  }

  cancelLabel(id: string, reason: string): string {
    return `cancelOrder(${q(id)}, ${q(reason)})`;
  }

  /** A placeOrder the contract accepts: the model learns the order and its event. */
  expectPlaced(cmd: PlaceOrder, readings: number[] | null, span: [number, number], what: string): void {
    const totalCents = totalOf(cmd);
    this.orders.set(cmd.orderId, { customerId: cmd.customerId, status: "placed", total: totalCents, reason: null });
    this.events.push({ aggregateId: cmd.orderId, type: "order.placed", payload: { orderId: cmd.orderId, customerId: cmd.customerId, lines: cmd.lines, totalCents }, readings, span, what });
  }

  expectCancelled(id: string, reason: string, readings: number[] | null, span: [number, number], what: string): void {
    const o = this.orders.get(id)!;
    o.status = "cancelled";
    o.reason = reason;
    this.events.push({ aggregateId: id, type: "order.cancelled", payload: { orderId: id, reason }, readings, span, what });
  }

  /** placeOrder, which must succeed; then the whole database is checked. */
  async placeOk(proc: Proc, cmd: PlaceOrder, context = ""): Promise<void> {
    const what = this.placeLabel(cmd);
    const r = await this.request(proc, what, () => proc.service.placeOrder(cmd));
    if ("killed" in r) this.t.fail(`grader bug: ${what} was killed`);
    if (!r.ok) this.t.fail(`${what}${context} threw ${errorText(r.error)}; the order id is new and the order valid, so it must be placed.`);
    const req = this.lastReq(proc, what);
    this.expectPlaced(cmd, req.readings, [req.started, this.time], what);
    await this.expectDb(`After ${what}${context}`, proc);
  }

  async cancelOk(proc: Proc, id: string, reason: string, context = ""): Promise<void> {
    const what = this.cancelLabel(id, reason);
    const r = await this.request(proc, what, () => proc.service.cancelOrder(id, reason));
    if ("killed" in r) this.t.fail(`grader bug: ${what} was killed`);
    if (!r.ok) this.t.fail(`${what}${context} threw ${errorText(r.error)}; the order is 'placed', so it must be cancelled.`);
    const req = this.lastReq(proc, what);
    this.expectCancelled(id, reason, req.readings, [req.started, this.time], what);
    await this.expectDb(`After ${what}${context}`, proc);
  }

  /** A request the order's state refuses: it must throw an OrderRejected and write nothing. */
  async refused(proc: Proc, what: string, run: () => Promise<void>, why: string): Promise<void> {
    const r = await this.request(proc, what, run);
    if ("killed" in r) this.t.fail(`grader bug: ${what} was killed`);
    if (r.ok) this.t.fail(`${what} returned normally, but ${why}: it must throw an OrderRejected and write nothing.`);
    if (!isRejected(r.error)) this.t.fail(`${what} threw ${errorText(r.error)}; ${why}, so it must throw an OrderRejected (an error named "OrderRejected"), and write nothing.`);
    await this.expectDb(`After ${what} (refused: ${why})`, proc);
  }

  private lastReq(proc: Proc, _what: string): Req {
    return proc.lastReq!;
  }

  // -------------------------------------------------------------------------------------------
  // What the grader's connection sees

  rows(db: Database.Database = this.db): { orders: OrderRow[]; outbox: OutboxRow[] } {
    return {
      orders: db.prepare("SELECT id, customer_id, status, total_cents, cancel_reason FROM orders ORDER BY id").all() as OrderRow[],
      outbox: db.prepare("SELECT rowid AS seq, id, aggregate_id, event_type, payload, created_at, processed_at, retry_count, error FROM outbox ORDER BY rowid").all() as OutboxRow[],
    };
  }

  /** The database holds exactly what the accepted requests wrote; nothing was published. */
  async expectDb(when: string, proc?: Proc): Promise<void> {
    if (proc?.host.alive) await proc.host.turns();
    this.noPublish(when);
    const problem = judgeRows(this.rows(), this.orders, this.events);
    if (problem) this.t.fail(`${when}, ${problem}`);
  }

  noPublish(when: string): void {
    const p = this.published[0];
    if (p) {
      this.t.fail(
        `${when}: your service called deps.bus.publish(${describeValue(p.type)}, ${describeValue(p.payload, 120)}) from process ${p.proc}. The request path must publish nothing: a publish next to the commit is the dual write the outbox exists to avoid (the commit can succeed and the publish fail, or the other way round). The outbox row is the message; the relay publishes it later.`,
      );
    }
  }

  /** The first commit in the pinned WAL after which orders and outbox rows do not pair up. */
  firstUnpairedCommit(): string | null {
    if (!this.pin) throw new Error("grader bug: no WAL pin");
    const ends = walCommitEndsOf(this.dbPath);
    const image = join(this.t.tmpDir, "commit.db");
    for (const [i, end] of ends.entries()) {
      writeCrashImage(this.dbPath, image, end);
      const db = new Database(image, { readonly: true });
      try {
        const problem = pairing(this.rows(db));
        if (problem) return `right after commit ${i + 1} of ${ends.length} (the database as a crash at that moment would leave it), ${problem}`;
      } finally {
        db.close();
      }
    }
    return null;
  }
}

export interface OrderRow {
  id: string;
  customer_id: string;
  status: string;
  total_cents: number;
  cancel_reason: string | null;
}

export interface OutboxRow {
  seq: number;
  id: unknown;
  aggregate_id: unknown;
  event_type: unknown;
  payload: unknown;
  created_at: unknown;
  processed_at: unknown;
  retry_count: unknown;
  error: unknown;
}

/**
 * Whether the state and the outbox agree, whatever the requests were: each order has exactly one
 * order.placed row, a cancelled one exactly one order.cancelled row, a placed one none, and every
 * outbox row belongs to an order in the state it announces.
 */
export function pairing({ orders, outbox }: { orders: OrderRow[]; outbox: OutboxRow[] }): string | null {
  const byId = new Map(orders.map((o) => [o.id, o]));
  for (const o of orders) {
    const placed = outbox.filter((r) => r.aggregate_id === o.id && r.event_type === "order.placed").length;
    const cancelled = outbox.filter((r) => r.aggregate_id === o.id && r.event_type === "order.cancelled").length;
    const many = (n: number) => (n === 0 ? "a state change without its event" : "one event too many: written twice, or for a change that did not happen");
    if (placed !== 1) return `order ${q(o.id)} exists (status ${q(o.status)}) with ${placed} order.placed outbox rows: ${many(placed)}.`;
    if (o.status === "cancelled" && cancelled !== 1) return `order ${q(o.id)} is cancelled with ${cancelled} order.cancelled outbox rows: ${many(cancelled)}.`;
    if (o.status === "placed" && cancelled !== 0) return `order ${q(o.id)} is still 'placed', yet the outbox holds an order.cancelled row for it: an event without its state change.`;
  }
  for (const r of outbox) {
    if (!byId.has(r.aggregate_id as string)) return `the outbox holds a ${describeValue(r.event_type)} row for order ${q(r.aggregate_id)}, which is not in the orders table: an event without its state change.`;
  }
  return null;
}

/** The database against the model: every order and every outbox row, every property of each. */
export function judgeRows(rows: { orders: OrderRow[]; outbox: OutboxRow[] }, orders: Map<string, OrderModel>, events: ExpectedEvent[]): string | null {
  // State and events out of step first: what a crash or a second transaction leaves.
  const pair = pairing(rows);
  if (pair) return pair;
  for (const o of rows.orders) {
    const m = orders.get(o.id);
    if (!m) return `the orders table holds order ${q(o.id)}, which no accepted request placed.`;
    const want = { id: o.id, customer_id: m.customerId, status: m.status, total_cents: m.total, cancel_reason: m.reason };
    if (!isDeepStrictEqual({ ...o }, want)) return `order ${q(o.id)} is stored as ${describeValue({ ...o }, 300)}; the requests made it ${describeValue(want, 300)}.`;
  }
  for (const [id, m] of orders) {
    if (!rows.orders.some((o) => o.id === id)) return `order ${q(id)} (${m.status}) is missing from the orders table.`;
  }
  // Outbox rows: one per expected event, each with its properties.
  const ids = new Set<unknown>();
  for (const e of events) {
    const matching = rows.outbox.filter((r) => r.aggregate_id === e.aggregateId && r.event_type === e.type);
    if (matching.length !== 1) return `the outbox holds ${matching.length} ${e.type} rows for order ${q(e.aggregateId)}; ${e.what} must have written exactly one.`;
    const r = matching[0]!;
    const at = `the ${e.type} outbox row of order ${q(e.aggregateId)}`;
    if (typeof r.id !== "string" || !UUID_V4.test(r.id)) return `${at} has id ${describeValue(r.id)}; an event id is a version-4 UUID (crypto.randomUUID()), so that consumers can deduplicate by it across every writer.`;
    if (ids.has(r.id.toLowerCase())) return `${at} has id ${q(r.id)}, which another outbox row has too; every event has an id of its own.`;
    ids.add(r.id.toLowerCase());
    let parsed: unknown;
    try {
      if (typeof r.payload !== "string") throw new Error("not text");
      parsed = JSON.parse(r.payload);
    } catch {
      return `${at} has payload ${describeValue(r.payload, 200)}, which is not JSON text; store JSON.stringify(payload), so that any consumer can read it.`;
    }
    if (!isDeepStrictEqual(parsed, e.payload)) return `${at} has a payload that parses to ${describeValue(parsed, 220)}; it must be ${describeValue(e.payload, 220)} (JSON.stringify of the event, nothing added or left out).`;
    if (typeof r.created_at !== "string" || !ISO_MS_Z.test(r.created_at)) {
      return `${at} has created_at ${describeValue(r.created_at)}; it must be ISO-8601 text as toISOString() writes it (UTC, milliseconds, Z: "2031-04-05T06:07:08.009Z"), so that ORDER BY created_at is time order for the relay.`;
    }
    const t = Date.parse(r.created_at);
    if (e.readings && !e.readings.includes(t)) {
      const seen = e.readings.length ? `the clock said ${e.readings.map((x) => new Date(x).toISOString()).join(", ")}` : "your service never read deps.clock";
      return `${at} has created_at ${q(r.created_at)}, but during ${e.what} ${seen}. created_at is the time of the write: new Date(deps.clock.now()).toISOString(), read while the request runs (not Date.now(), not a time read earlier).`;
    }
    if (!e.readings && (t < e.span[0] || t > e.span[1])) return `${at} has created_at ${q(r.created_at)}, outside the time its request ran (${new Date(e.span[0]).toISOString()} to ${new Date(e.span[1]).toISOString()} on deps.clock).`;
    if (r.processed_at !== null || r.retry_count !== 0 || r.error !== null) {
      return `${at} has processed_at ${describeValue(r.processed_at)}, retry_count ${describeValue(r.retry_count)}, error ${describeValue(r.error)}; those columns are the relay's: a new row has NULL, 0 and NULL (it has not been published).`;
    }
  }
  const extra = rows.outbox.find((r) => !events.some((e) => e.aggregateId === r.aggregate_id && e.type === r.event_type));
  if (extra) return `the outbox holds a ${describeValue(extra.event_type)} row for order ${q(extra.aggregate_id)} that no accepted request wrote (the event types are 'order.placed' and 'order.cancelled').`;
  return null;
}
