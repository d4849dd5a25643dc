/**
 * The outbox-relay grader's world. The grader owns, and judges only from:
 *   - the outbox database, on its own connection (it inserts the rows, as the service would, and
 *     reads what the relay wrote), plus an AFTER UPDATE trigger whose SQL function is a grader
 *     callback registered on the learner's own connection: every mark and every failure record
 *     the relay writes reaches the grader synchronously, inside the learner's statement, before
 *     it commits (so the grader can SIGKILL the host right there);
 *   - the wire between the relay and RabbitMQ, on its ChaosProxy: confirm.select, every
 *     basic.publish with its properties and body, every confirm (basic.ack / basic.nack) the
 *     broker sends back, which the grader can hold, or stop at and SIGKILL the host on;
 *   - `connect()`, a grader callback: it refuses while the grader holds the broker down;
 *   - the virtual clock: every sleep the relay asks for, and time moves only when the grader says;
 *   - its own queue, bound to the exchange, drained at the end (what the broker actually got).
 */
import { join } from "node:path";
import Database from "better-sqlite3";
import type BetterSqlite3 from "better-sqlite3";
import type { ChannelModel, ConfirmChannel, GetMessage } from "amqplib";
import { CheckFailure, LabError, QueueObserver, VirtualClock, decodeContentHeader, describeValue } from "../../../src/kit/index.ts";
import type { AmqpFrame, ChaosProxy, CheckContext, Host, Rng } from "../../../src/kit/index.ts";
import type { OutboxRelaySubmission, OutboxRow, Relay, RelayOptions } from "../../../src/contracts/outbox-relay.ts";

export type T = CheckContext<OutboxRelaySubmission>;

/**
 * Real time the relay gets to react to something the grader did (rows inserted and time moved,
 * a confirm released, a refusal): correct code needs milliseconds; this only turns a relay that
 * waits on real timers, or on nothing, into a message instead of a hang. Generous for a loaded box.
 */
export const REACT_MS = 3000;
/** The outbox database, in the check's shared folder: every relay process of the check opens it. */
const DB_FILE = "service.db";
const HOOK = "msglab_outbox_hook";
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- the clock

/** The kit's VirtualClock, plus a record of every sleep (and whether it has ended), and a poke per request. */
export class WatchedClock extends VirtualClock {
  readonly requests: { ms: number; at: number; until: number; done: boolean; n: number }[] = [];

  constructor(
    start: number,
    private readonly poke: () => void,
    private readonly requested: (req: { ms: number; at: number; until: number; n: number }) => void = () => {},
  ) {
    super(start);
    this.now = this.now.bind(this);
    this.sleep = this.sleep.bind(this);
  }

  override sleep(ms: number, signal?: AbortSignal): Promise<void> {
    const p = super.sleep(ms, signal);
    const entry = { ms, at: this.now(), until: this.now() + ms, done: false, n: this.requests.length + 1 };
    this.requests.push(entry);
    const end = () => {
      entry.done = true;
      this.poke();
    };
    p.then(end, end);
    this.requested(entry);
    this.poke();
    return p;
  }

  /**
   * The relay that asked for the open sleeps is dead (the grader SIGKILLed it): they will never
   * be awaited again, so they no longer count as open. Only for checks that run one relay at a time.
   */
  abandonOpen(): void {
    for (const r of this.requests) r.done = true;
  }

  /** Sleeps asked for and not ended. */
  open(): { ms: number; at: number; until: number; done: boolean; n: number }[] {
    return this.requests.filter((r) => !r.done);
  }
}

// ---------------------------------------------------------------- rows

const TYPES = ["order.created", "order.paid", "order.shipped", "order.cancelled"];
const TEXTS = ["Zürich Ärztehaus 🚑", 'O\'Brien "Bulk" Ltd', "初音 trading", "back\\slash & co", "plain", "line\nbreak"];

export interface Seeded extends Pick<OutboxRow, "id" | "aggregate_id" | "event_type" | "payload" | "created_at"> {}

/**
 * Rows whose ids, insertion order and created_at order all differ: ids are random hex with the odd
 * quote, colon or space; several rows share a created_at (then the id decides); the payload is JSON
 * with text outside ASCII. `from` is the created_at of the first row (ms).
 */
export function makeRows(rng: Rng, n: number, from: number, tag: string): Seeded[] {
  const out: Seeded[] = [];
  let at = from;
  for (let i = 0; i < n; i++) {
    // Ties on every run: every third step is 0 ms.
    at += i % 3 === 2 ? 0 : rng.int(1, 40);
    const hex = Math.floor(rng.next() * 0xffffffff).toString(16).padStart(8, "0");
    const odd = rng.pick(["", "", ":", " ", '"', "'"]);
    const id = `${hex.slice(0, 4)}${odd}${hex.slice(4)}-${tag}${i}`;
    const aggregate = `order-${rng.int(1, 4)}`;
    const payload = JSON.stringify({ orderId: aggregate, seq: i, customer: rng.pick(TEXTS), total: rng.int(1, 99999) / 100 });
    out.push({ id, aggregate_id: aggregate, event_type: rng.pick(TYPES), payload, created_at: new Date(at).toISOString() });
  }
  return out;
}

/**
 * The order the grader inserts rows in: shuffled, except that rows sharing a created_at go in
 * with the greater id first. SQLite returns ties of an ORDER BY in scan (rowid) order, so a poll
 * that orders by created_at alone gets every tie the wrong way round, every run.
 */
export function insertionOrder(rng: Rng, rows: Seeded[]): Seeded[] {
  const out = rng.shuffle(rows);
  const groups = new Map<string, number[]>();
  out.forEach((r, i) => groups.set(r.created_at, [...(groups.get(r.created_at) ?? []), i]));
  for (const at of groups.values()) {
    if (at.length < 2) continue;
    const desc = contractOrder(at.map((i) => out[i]!)).reverse();
    at.forEach((pos, j) => (out[pos] = desc[j]!));
  }
  return out;
}

/** The contract's order: created_at, then id (compared as SQLite compares TEXT: by bytes). */
export function contractOrder<R extends { id: string; created_at: string }>(rows: R[]): R[] {
  const cmp = (a: string, b: string) => Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
  return [...rows].sort((a, b) => cmp(a.created_at, b.created_at) || cmp(a.id, b.id));
}

// ---------------------------------------------------------------- the wire

export interface Publish {
  link: number;
  channel: number;
  /** The publish sequence number on its confirm channel (0 on a channel without confirm.select). */
  seq: number;
  exchange: string;
  routingKey: string;
  messageId: string | undefined;
  deliveryMode: number | undefined;
  type: string | undefined;
  contentType: string | undefined;
  hasHeaders: boolean;
  body: Buffer;
  /** Virtual time when its basic.publish crossed the proxy. */
  at: number;
  /** Which relay process published it (1, 2, … in the order the check started them). */
  process: number;
  confirm: null | { how: "ack" | "nack"; forwarded: boolean };
}

const key = (link: number, channel: number) => `${link}:${channel}`;

/** Reads a ChaosProxy's frames into publishes and their confirms (see Publish). */
export class PublishTracker {
  readonly publishes: Publish[] = [];
  readonly selects = new Set<string>();
  private readonly seqs = new Map<string, number>();
  private readonly building = new Map<string, { p: Publish; size: number; chunks: Buffer[] }>();
  /** Set while the grader holds the broker's confirms: they are seen, not yet forwarded. */
  holding = false;
  private readonly held: Publish[] = [];
  /** Which process the current connection belongs to (the check sets it before each relay starts). */
  process = 1;
  private readonly listeners: (() => void)[] = [];

  constructor(
    proxy: ChaosProxy,
    private readonly now: () => number,
  ) {
    proxy.tap("toBroker", (f) => this.fromClient(f));
    proxy.tap("toClient", (f) => this.fromBroker(f));
  }

  onChange(fn: () => void): void {
    this.listeners.push(fn);
  }

  private changed(): void {
    for (const fn of this.listeners) fn();
  }

  private fromClient(f: AmqpFrame): void {
    const k = key(f.link, f.channel);
    if (f.type === 1 && f.classId === 85 && f.methodId === 10) {
      this.selects.add(k);
      this.seqs.set(k, 0);
      return;
    }
    if (f.type === 1 && f.classId === 60 && f.methodId === 40) {
      let off = 11 + 2; // method payload: reserved short
      const exLen = f.raw[off]!;
      const exchange = f.raw.toString("utf8", off + 1, off + 1 + exLen);
      off += 1 + exLen;
      const rkLen = f.raw[off]!;
      const routingKey = f.raw.toString("utf8", off + 1, off + 1 + rkLen);
      const confirming = this.selects.has(k);
      const seq = confirming ? (this.seqs.get(k) ?? 0) + 1 : 0;
      if (confirming) this.seqs.set(k, seq);
      const p: Publish = {
        link: f.link,
        channel: f.channel,
        seq,
        exchange,
        routingKey,
        messageId: undefined,
        deliveryMode: undefined,
        type: undefined,
        contentType: undefined,
        hasHeaders: false,
        body: Buffer.alloc(0),
        at: this.now(),
        process: this.process,
        confirm: null,
      };
      this.building.set(k, { p, size: -1, chunks: [] });
      return;
    }
    if (f.type === 2) {
      const b = this.building.get(k);
      const h = decodeContentHeader(f);
      if (!b || !h) return;
      Object.assign(b.p, {
        messageId: h.properties.messageId,
        deliveryMode: h.properties.deliveryMode,
        type: h.properties.type,
        contentType: h.properties.contentType,
        hasHeaders: h.properties.hasHeaders === true,
      });
      b.size = h.bodySize;
      if (b.size === 0) this.finish(k);
      return;
    }
    if (f.type === 3) {
      const b = this.building.get(k);
      if (!b) return;
      const size = f.raw.readUInt32BE(3);
      b.chunks.push(f.raw.subarray(7, 7 + size));
      if (b.chunks.reduce((n, c) => n + c.length, 0) >= b.size) this.finish(k);
    }
  }

  private finish(k: string): void {
    const b = this.building.get(k)!;
    this.building.delete(k);
    b.p.body = Buffer.concat(b.chunks);
    this.publishes.push(b.p);
    this.changed();
  }

  private fromBroker(f: AmqpFrame): void {
    if (f.type !== 1 || f.classId !== 60 || (f.methodId !== 80 && f.methodId !== 120)) return;
    const k = key(f.link, f.channel);
    if (!this.selects.has(k)) return;
    const tag = Number(f.raw.readBigUInt64BE(11));
    const multiple = (f.raw[19]! & 1) !== 0;
    const how = f.methodId === 80 ? "ack" : "nack";
    for (const p of this.publishes) {
      if (p.link !== f.link || p.channel !== f.channel || p.confirm) continue;
      if (multiple ? p.seq <= tag || tag === 0 : p.seq === tag) {
        p.confirm = { how, forwarded: !this.holding };
        if (this.holding) this.held.push(p);
      }
    }
    this.changed();
  }

  /** The grader let the held confirms go: from now on the relay has them. */
  released(): void {
    this.holding = false;
    for (const p of this.held.splice(0)) if (p.confirm) p.confirm.forwarded = true;
    this.changed();
  }

  of(id: string): Publish[] {
    return this.publishes.filter((p) => p.messageId === id);
  }

  /** Whether the publish of `id` that `f` confirms (a basic.ack from the broker) exists. */
  confirms(f: AmqpFrame, id: string): Publish | null {
    if (f.type !== 1 || f.classId !== 60 || f.methodId !== 80) return null;
    const tag = Number(f.raw.readBigUInt64BE(11));
    const multiple = (f.raw[19]! & 1) !== 0;
    const p = this.publishes.find((x) => x.messageId === id && x.link === f.link && x.channel === f.channel && (multiple ? x.seq <= tag || tag === 0 : x.seq === tag));
    return p ?? null;
  }
}

/**
 * Matches the content header of the publish of row `id` (the basic.publish method frame before it
 * carries no message id). A gate there holds the header and body: the broker never gets a whole
 * message, so the row is not delivered.
 */
export const isPublishOf = (id: string) => (f: AmqpFrame) => f.type === 2 && decodeContentHeader(f)?.properties.messageId === id;

// ---------------------------------------------------------------- the database

export interface HookEvent {
  process: number;
  id: string;
  kind: "mark" | "retry" | "other";
  before: { processed_at: string | null; retry_count: number };
  after: { processed_at: string | null; retry_count: number; error: string | null };
  /** Virtual time at the write. */
  at: number;
}

/** The grader's own connection to the outbox database. */
export class Outbox {
  readonly path: string;
  readonly db: BetterSqlite3.Database;

  constructor(t: T) {
    this.path = join(t.sharedDir, DB_FILE);
    this.db = new Database(this.path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("busy_timeout = 0");
    this.db.exec(`
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
      CREATE TRIGGER msglab_outbox_update AFTER UPDATE ON outbox BEGIN
        SELECT ${HOOK}(NEW.id, OLD.processed_at, NEW.processed_at, OLD.retry_count, NEW.retry_count, NEW.error);
      END;
      CREATE TRIGGER msglab_outbox_delete BEFORE DELETE ON outbox BEGIN
        SELECT RAISE(ABORT, 'the outbox keeps its rows: mark a published row processed, do not delete it');
      END;
    `);
    t.defer(() => this.db.close());
  }

  rows(): OutboxRow[] {
    return this.db.prepare("SELECT * FROM outbox").all() as OutboxRow[];
  }

  row(id: string): OutboxRow | undefined {
    return this.db.prepare("SELECT * FROM outbox WHERE id = ?").get(id) as OutboxRow | undefined;
  }

  pending(): OutboxRow[] {
    return contractOrder(this.rows().filter((r) => r.processed_at === null));
  }

  /** Inserts rows (in the order given) in one transaction, now; false when a relay holds the write lock. */
  tryInsert(rows: Seeded[]): boolean {
    const stmt = this.db.prepare("INSERT INTO outbox (id, aggregate_id, event_type, payload, created_at) VALUES (?, ?, ?, ?, ?)");
    try {
      this.db.transaction((rs: Seeded[]) => {
        for (const r of rs) stmt.run(r.id, r.aggregate_id, r.event_type, r.payload, r.created_at);
      })(rows);
      return true;
    } catch (e) {
      if (String((e as { code?: unknown }).code ?? "").startsWith("SQLITE_BUSY")) return false;
      throw e;
    }
  }

  /**
   * Inserts rows in one transaction, retrying while a relay holds the write lock. Never blocks:
   * the relay may be holding the lock inside a statement that waits for the grader's hook.
   */
  async insert(rows: Seeded[]): Promise<void> {
    const until = Date.now() + 5000;
    while (!this.tryInsert(rows)) {
      if (Date.now() > until) throw new LabError("the outbox database stayed locked for 5 s: the grader could not insert its rows");
      await sleep(2);
    }
  }
}

// ---------------------------------------------------------------- the world of one check

export interface Attempt {
  process: number;
  at: number;
  refused: string | null;
}

export interface Settings {
  pollIntervalMs: number;
  batchSize: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export function drawSettings(rng: Rng): Settings {
  const baseDelayMs = rng.pick([50, 100, 200, 250]);
  return { pollIntervalMs: rng.pick([250, 1000, 5000]), batchSize: rng.int(3, 5), baseDelayMs, maxDelayMs: baseDelayMs * rng.pick([4, 8, 16]) };
}

export function backoff(s: Settings, n: number): number {
  return Math.min(s.maxDelayMs, s.baseDelayMs * 2 ** (n - 1));
}

export interface RunningRelay {
  process: number;
  host: Host;
  relay: Promise<Relay>;
  /** Set once startRelay() has settled. */
  started: { ok: true; value: Relay } | { ok: false; error: unknown } | null;
}

/** What the grader does at a hook event: nothing, or SIGKILL the process right there. */
export type HookDecision = "go" | "kill";

export class World {
  readonly clock: WatchedClock;
  readonly outbox: Outbox;
  proxy!: ChaosProxy;
  tracker!: PublishTracker;
  gch!: ConfirmChannel;
  obs!: QueueObserver;
  exchange!: string;
  queue!: string;
  readonly events: HookEvent[] = [];
  readonly attempts: Attempt[] = [];
  readonly relays: RunningRelay[] = [];
  /** Problems the grader found as they happened (a mark before its confirm, …): the first one fails the check. */
  readonly problems: string[] = [];
  /** While set, connect() refuses. */
  down = false;
  /** How many connect() calls there were when the grader last let the broker up (null: it was never down). */
  upSince: number | null = null;

  up(): void {
    this.down = false;
    this.upSince = this.attempts.length;
  }
  /** The end of the backoff the relay sleeps now: an attempt before it did not wait. */
  notBefore = -Infinity;
  private publishesSeen = 0;
  refusals = 0;
  onHook: ((e: HookEvent, run: RunningRelay) => HookDecision) | null = null;
  /** Called at every sleep the relay asks for, as it asks. */
  onSleep: ((req: { ms: number; at: number; until: number; n: number }) => void) | null = null;
  private readonly waiters = new Set<() => void>();
  readonly seeded: Seeded[] = [];

  constructor(
    readonly t: T,
    readonly settings: Settings,
  ) {
    const epoch = Date.parse("2026-03-02T08:00:00.000Z") + t.rng.int(0, 86_400_000);
    this.clock = new WatchedClock(epoch, () => this.poke(), (req) => this.onSleep?.(req));
    this.outbox = new Outbox(t);
  }

  static async create(t: T, settings: Settings): Promise<World> {
    const w = new World(t, settings);
    const [proxy, conn] = await Promise.all([t.proxy(), t.rabbit.connect()]);
    w.proxy = proxy;
    w.tracker = new PublishTracker(proxy, () => w.clock.now());
    w.tracker.onChange(() => {
      for (; w.publishesSeen < w.tracker.publishes.length; w.publishesSeen++) {
        const p = w.tracker.publishes[w.publishesSeen]!;
        if (p.at < w.notBefore) w.problem(`Your relay published row ${describeValue(p.messageId)} at virtual time ${p.at - w.notBefore} ms before its backoff sleep ended: it did not wait for the sleep to end.`);
      }
      w.poke();
    });
    proxy.tap("toClient", () => setImmediate(() => w.poke()));
    w.gch = await conn.createConfirmChannel();
    w.gch.on("error", () => {});
    w.obs = new QueueObserver(conn);
    w.exchange = resourceName(t, "events");
    w.queue = resourceName(t, "events.all");
    await w.gch.assertExchange(w.exchange, "topic", { durable: true });
    await w.gch.assertQueue(w.queue, { durable: true });
    await w.gch.bindQueue(w.queue, w.exchange, "#");
    return w;
  }

  poke(): void {
    for (const fn of [...this.waiters]) fn();
  }

  /** Waits (on events) until `cond` holds, a problem was recorded, or REACT_MS (or `ms`) pass: then fails with `message()`. */
  async until(cond: () => boolean, message: () => string, ms = REACT_MS): Promise<void> {
    const check = () => cond() || this.problems.length > 0 || this.relays.some((r) => r.host.escaped.length > 0 && r.host.alive);
    if (!check()) {
      const ok = await new Promise<boolean>((resolve) => {
        const w = () => {
          if (!check()) return;
          this.waiters.delete(w);
          clearTimeout(timer);
          clearInterval(poll);
          resolve(true);
        };
        const timer = setTimeout(() => {
          this.waiters.delete(w);
          clearInterval(poll);
          resolve(false);
        }, ms);
        // Most changes poke (the wire, the hook, the clock); a host's exit and a closed socket don't.
        const poll = setInterval(w, 5);
        this.waiters.add(w);
      });
      if (!ok) throw new CheckFailure(message());
    }
    this.failOnProblem();
  }

  failOnProblem(): void {
    if (this.problems.length) throw new CheckFailure(this.problems[0]!);
    const escaped = this.relays.find((r) => r.host.escaped.length > 0);
    if (escaped) throw new CheckFailure(`An error escaped your relay (process ${escaped.process}): ${describeValue((escaped.host.escaped[0] as Error)?.message ?? escaped.host.escaped[0])}. Catch what a failed attempt throws, record it on the row, and go on.`);
  }

  problem(text: string): void {
    if (this.problems.length === 0) this.problems.push(text);
    this.poke();
  }

  async insert(rows: Seeded[]): Promise<void> {
    this.seeded.push(...rows);
    await this.outbox.insert(insertionOrder(this.t.rng, rows));
  }

  /** Starts the learner's relay in `host` (a process of the service): its database, its clock, its connect(). */
  async start(host: Host): Promise<RunningRelay> {
    const t = this.t;
    const process = this.relays.length + 1;
    this.tracker.process = process;
    const db = await host.cap("sqlite.open", { path: this.outbox.path, pragmas: ["busy_timeout = 5000"] });
    const run: RunningRelay = { process, host, relay: null as never, started: null };
    await host.cap("sqlite.function", {
      db,
      name: HOOK,
      fn: t.sync((id: unknown, oldProcessed: unknown, newProcessed: unknown, oldRetry: unknown, newRetry: unknown, error: unknown) => {
        const e: HookEvent = {
          process,
          id: String(id),
          kind: oldProcessed === null && newProcessed !== null ? "mark" : Number(newRetry) !== Number(oldRetry) ? "retry" : "other",
          before: { processed_at: oldProcessed as string | null, retry_count: Number(oldRetry) },
          after: { processed_at: newProcessed as string | null, retry_count: Number(newRetry), error: error as string | null },
          at: this.clock.now(),
        };
        this.events.push(e);
        if (e.kind === "mark") this.judgeMark(e);
        const decision = this.onHook?.(e, run) ?? "go";
        this.poke();
        if (decision === "kill") return host.kill().then(() => null);
        return null;
      }),
    });
    const connect = async (): Promise<ChannelModel> => {
      const attempt: Attempt = { process, at: this.clock.now(), refused: null };
      this.attempts.push(attempt);
      if (attempt.at < this.notBefore) {
        this.problem(`Your relay called connect() again ${this.notBefore - attempt.at} ms (virtual) before its backoff sleep ended: it did not wait for the sleep (await clock.sleep(ms, signal)).`);
      }
      this.poke();
      if (this.down) {
        const n = ++this.refusals;
        attempt.refused = `connect ECONNREFUSED (the grader holds the broker down: refusal ${n})`;
        const err = new Error(attempt.refused) as Error & { code: string };
        err.code = "ECONNREFUSED";
        throw err;
      }
      this.tracker.process = process;
      return host.cap<ChannelModel>("amqp.connection", { url: this.proxy.urlFor(t.amqpUrl) });
    };
    const clock = this.clock;
    const opts: RelayOptions = {
      db: db as never,
      connect,
      exchange: this.exchange,
      clock: { now: t.sync(() => clock.now()), sleep: (ms: number, signal?: AbortSignal) => clock.sleep(ms, signal) },
      ...this.settings,
    };
    run.relay = host.call<Relay>("startRelay", opts);
    run.relay.then(
      (value) => {
        run.started = { ok: true, value };
        this.poke();
      },
      (error: unknown) => {
        run.started = { ok: false, error };
        this.poke();
      },
    );
    this.relays.push(run);
    return run;
  }

  /** The relay object, once startRelay() has resolved (it must, at once). */
  async relayOf(run: RunningRelay): Promise<Relay> {
    await this.until(
      () => run.started !== null,
      () => `startRelay() did not resolve within ${REACT_MS / 1000} s. Start the loop in the background and resolve at once (don't await the first poll).`,
    );
    const s = run.started!;
    if (!s.ok) {
      if ((s.error as Error)?.name === "HostGone") throw s.error;
      this.t.fail(`startRelay() rejected: ${errorText(s.error)}.`);
    }
    if (!s.value || typeof s.value.stop !== "function") this.t.fail(`startRelay() resolved to ${describeValue(s.value)}; it must resolve to an object with a stop() method.`);
    return s.value;
  }

  /** Every mark must follow a basic.ack for that row's latest publish, forwarded to the relay. */
  private judgeMark(e: HookEvent): void {
    const pubs = this.tracker.of(e.id);
    const last = pubs.at(-1);
    const row = describeValue(e.id);
    if (!last) {
      this.problem(
        `Your relay marked row ${row} processed before any publish of it had reached the broker (the grader's proxy had seen none yet), so before any confirm could have: ` +
          (this.tracker.selects.size === 0
            ? "no channel of your relay even enabled publisher confirms (confirm.select). Publish on a confirm channel (createConfirmChannel), and mark a row only after its basic.ack has arrived."
            : "mark a row only after its basic.ack has arrived (the publish callback, or waitForConfirms), never right after publish()."),
      );
    } else if (!this.tracker.selects.has(key(last.link, last.channel))) {
      this.problem(`Your relay marked row ${row} processed, but it published it on a channel without publisher confirms (no confirm.select): the broker never said it had the message. Publish on a confirm channel (createConfirmChannel) and mark only after the ack.`);
    } else if (!last.confirm) {
      this.problem(`Your relay marked row ${row} processed while the broker had not confirmed its message yet${this.tracker.holding ? " (the grader was holding the confirms)" : ""}: if the broker never gets it, or the relay dies now, the event is lost for good. Mark a row only after its basic.ack has arrived.`);
    } else if (last.confirm.how === "nack") {
      this.problem(`Your relay marked row ${row} processed although the broker nacked its message (basic.nack): the broker refused it, so the event was never delivered. A nack is a failed attempt.`);
    } else if (!last.confirm.forwarded) {
      this.problem(`Your relay marked row ${row} processed while the grader was still holding the broker's confirm for it: it never waited for the confirm.`);
    }
    // An older row that went out and was never marked (nacked, unconfirmed) is still pending: this row
    // overtakes it. Marks are read from the hook, not the grader's connection: one transaction may mark
    // several rows, and the grader sees none of them before it commits.
    const order = contractOrder(this.seeded);
    const older = order.slice(0, Math.max(0, order.findIndex((r) => r.id === e.id)));
    const behind = older.find((r) => this.tracker.of(r.id).length > 0 && !this.events.some((x) => x.kind === "mark" && x.id === r.id));
    if (behind) {
      const how = this.tracker.of(behind.id).at(-1)?.confirm?.how;
      this.problem(
        `Your relay marked row ${row} processed while the older row ${describeValue(behind.id)} (created_at ${behind.created_at}), published before it, was still pending (its last publish ${how === "nack" ? "was nacked" : how === "ack" ? "was acked but the row never marked" : "had no confirm"}): ` +
          `the next attempt starts from ${describeValue(behind.id)}, and ${row} is never sent after it. Mark only the rows of a pass up to the first one that failed.`,
      );
    }
    if (e.after.processed_at !== null) {
      const want = new Date(e.at).toISOString();
      if (e.after.processed_at !== want) {
        this.problem(`Your relay marked row ${row} with processed_at ${describeValue(e.after.processed_at)}; the clock said ${want} (new Date(clock.now()).toISOString(), taken when marking).`);
      }
    }
  }

  /** A retry or mark that changed another row than the oldest pending one, or a retry_count not +1. */
  retriesOf(id: string): HookEvent[] {
    return this.events.filter((e) => e.id === id && e.kind === "retry");
  }

  /** Drains the grader's queue: every message the broker took, in queue order. */
  async drain(): Promise<GetMessage[]> {
    const ch = await this.obs.throwaway();
    const out: GetMessage[] = [];
    for (;;) {
      const m = await ch.get(this.queue, { noAck: true });
      if (m === false) break;
      out.push(m);
    }
    await ch.close().catch(() => {});
    return out;
  }

  /** Stops every relay still alive (housekeeping after a verdict; a hung stop() kills the host). */
  async stopAll(): Promise<void> {
    for (const run of this.relays) {
      if (!run.host.alive || !run.started?.ok) continue;
      const ok = await Promise.race([run.started.value.stop().then(() => true, () => false), sleep(2000).then(() => false)]);
      if (!ok && run.host.alive) await run.host.kill();
    }
  }
}

/** A queue or exchange name unique to this check (the grading's vhost removes it at the end). */
export function resourceName(t: T, base: string): string {
  const vhost = decodeURIComponent(new URL(t.amqpUrl).pathname.slice(1));
  return vhost.startsWith("msglab-") ? `${t.names.prefix}.${base}` : t.names.queue(base);
}

export function errorText(e: unknown): string {
  if (e instanceof Error || (typeof e === "object" && e !== null && "message" in e)) return `${(e as Error).name ?? "Error"}: ${describeValue((e as Error).message)}`;
  return describeValue(e);
}

// ---------------------------------------------------------------- verdicts

/**
 * What the broker got, against the rows: every row at least once, first appearances in the
 * contract's order, duplicates only of rows in `mayRepeat`, each message as the contract says.
 */
export function judgeDelivered(got: GetMessage[], rows: Seeded[], mayRepeat: Set<string>, exchange: string, order: Seeded[] = contractOrder(rows)): string | null {
  const byId = new Map(rows.map((r) => [r.id, r]));
  const seen = new Map<string, number>();
  const firsts: string[] = [];
  for (const m of got) {
    const id = m.properties.messageId as string | undefined;
    const row = id === undefined ? undefined : byId.get(id);
    if (!row) return `The broker got a message with messageId ${describeValue(id)} and body ${describeValue(m.content.toString("utf8"), 80)}, which is no row of the outbox: set messageId to the row's id.`;
    if (!m.content.equals(Buffer.from(row.payload, "utf8"))) return `Row ${describeValue(row.id)} reached the broker with the body ${describeValue(m.content.toString("utf8"), 100)}, expected its payload byte for byte: ${describeValue(row.payload, 100)}.`;
    if (m.fields.exchange !== exchange || m.fields.routingKey !== row.event_type) {
      return `Row ${describeValue(row.id)} was published to exchange ${describeValue(m.fields.exchange)} with routing key ${describeValue(m.fields.routingKey)}; expected ${describeValue(exchange)} and its event_type ${describeValue(row.event_type)}.`;
    }
    if (m.properties.deliveryMode !== 2) return `Row ${describeValue(row.id)} was published with deliveryMode ${describeValue(m.properties.deliveryMode)}, not 2 (persistent): a broker restart would lose the event the outbox kept so carefully.`;
    if (m.properties.type !== row.event_type) return `Row ${describeValue(row.id)} was published with type ${describeValue(m.properties.type)}; expected its event_type ${describeValue(row.event_type)}.`;
    if (m.properties.contentType !== "application/json") return `Row ${describeValue(row.id)} was published with contentType ${describeValue(m.properties.contentType)}; expected "application/json".`;
    const agg = (m.properties.headers as Record<string, unknown> | undefined)?.aggregateId;
    if (agg !== row.aggregate_id) return `Row ${describeValue(row.id)} was published with headers ${describeValue(m.properties.headers)}; expected { aggregateId: ${describeValue(row.aggregate_id)} }.`;
    const n = (seen.get(row.id) ?? 0) + 1;
    seen.set(row.id, n);
    if (n === 1) firsts.push(row.id);
    else if (!mayRepeat.has(row.id)) return `Row ${describeValue(row.id)} reached the broker ${n} times, though no failure or crash left it published and unmarked: publish each row once per pass, and poll again only after the pass is done.`;
  }
  const missing = rows.filter((r) => !seen.has(r.id));
  if (missing.length) return `Row ${describeValue(missing[0]!.id)} (created_at ${missing[0]!.created_at}) never reached the broker${missing.length > 1 ? ` (${missing.length} rows missing)` : ""}.`;
  const want = order.map((r) => r.id);
  const at = firsts.findIndex((id, i) => id !== want[i]);
  if (at >= 0) {
    const got1 = byId.get(firsts[at]!)!;
    const want1 = byId.get(want[at]!)!;
    return (
      `The rows reached the broker out of order: message ${at + 1} was row ${describeValue(got1.id)} (created_at ${got1.created_at}), but the oldest row not yet delivered was ${describeValue(want1.id)} (created_at ${want1.created_at}). ` +
      (got1.created_at === want1.created_at ? "They share a created_at: then the id decides. " : "") +
      `Poll ORDER BY created_at, id (not by id, not in insertion order), and after a failure start again from the oldest pending row.`
    );
  }
  return null;
}

/** The rows in the grader's database against what the relay must have written. */
export function judgeRows(out: Outbox, rows: Seeded[], retries: Map<string, number>): string | null {
  for (const r of contractOrder(rows)) {
    const row = out.row(r.id);
    if (!row) return `Row ${describeValue(r.id)} is gone from the outbox.`;
    if (row.processed_at === null) return `Row ${describeValue(r.id)} was delivered, but its processed_at is still NULL: mark each row once its confirm has arrived.`;
    const want = retries.get(r.id) ?? 0;
    if (row.retry_count !== want) {
      return `Row ${describeValue(r.id)} has retry_count ${row.retry_count}; the grader counted ${want} failed attempt(s) on it: each failed attempt adds 1 to the oldest pending row (and only to it), and a success or a restart leaves the count as it is.`;
    }
    if (want === 0 && row.error !== null) return `Row ${describeValue(r.id)} never had a failed attempt, yet its error is ${describeValue(row.error)}.`;
  }
  return null;
}

export function ordinal(n: number): string {
  const s = n % 100 >= 11 && n % 100 <= 13 ? "th" : ["th", "st", "nd", "rd"][n % 10] ?? "th";
  return `${n}${s}`;
}
