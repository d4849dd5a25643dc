// The grader's side of the at-least-once-consumer exercise. It publishes the payments, owns the
// ledger, runs the learner's consumer in submission hosts, and judges only from what it sees
// itself:
//   - every frame of the learner's connection, on a ChaosProxy of the grader's (one per host):
//     which deliveries the broker sent, which the consumer acked, nacked or rejected, and how
//     (one tag, or `multiple` up to a tag), what prefetch it asked for and whether it consumed
//     with noAck. A gate on the proxy can hold deliveries (to hand them over one at a time), or
//     hold the ack that settles a given payment and kill the host before it is ever forwarded;
//   - applyPayment's before/after callbacks: synchronous calls, so the host is blocked there, and
//     a kill there is exact;
//   - the SQLite file in the process's own folder, on the grader's own connection: what is
//     committed, at the instant of each callback and of each ack on the wire. A restart gets a
//     crash image of it in its own folder (src/kit/crash-image.ts): everything committed, or,
//     for the crash right after a commit, the WAL (pinned by a reader of the grader's, so every
//     transaction committed to the file, by any connection, stays there in order) cut right
//     after the commit the check names;
//   - the grading's shared folder, which every host may write: the grader keeps nothing there,
//     so a file there is state a process kept outside deps.db;
//   - the queue, through the grader's own RabbitMQ connection.
// The rule every check enforces on the wire: an ack may settle only payments whose ledger row
// is committed (an acked message is gone from the broker), a nack or reject without requeue
// drops the message, and a duplicate (its payment committed) must be acked, not nacked.
import { isDeepStrictEqual } from "node:util";
import { join } from "node:path";
import Database from "better-sqlite3";
import type { ConfirmChannel } from "amqplib";
import { CheckFailure, History, HostGone, QueueObserver, WalPin, WireDeliveries, sharedLeftovers, writeCrashImage, amqpCode, brokerText, describeValue, isSettlement } from "../../../src/kit/index.ts";
import type { ChaosProxy, CheckContext, Delivery, Gate, Host, Rng, Settlement } from "../../../src/kit/index.ts";
import type { AtLeastOnceConsumerSubmission, Payment, RunningConsumer } from "../../../src/contracts/at-least-once-consumer.ts";

export type T = CheckContext<AtLeastOnceConsumerSubmission>;

/** How long a run may take to apply a handful of payments (the reference needs well under a second). */
export const SETTLE_MS = 8000;
/**
 * And per payment, for long runs: the reference applies 305 in about a second on an idle
 * machine, and needed more than 8 s with three gradings at once on a loaded two-core machine.
 * A consumer that stops making progress is caught by QUIET_MS long before.
 */
const SETTLE_PER_PAYMENT_MS = 50;
/** With payments missing and nothing moving (no row, no delivery, no settlement) for this long, nothing more is coming. */
const QUIET_MS = 3000;
/** Every payment applied and the queue empty: how long deliveries may stay unsettled after that. */
const IDLE_OPEN_MS = 500;
/** How long the grader waits for one payment handed to the consumer to be committed. */
const ONE_PAYMENT_MS = 5000;
export const DB_FILE = "ledger.db";
/** WAL with a busy timeout; synchronous NORMAL: a commit survives a process crash (all the grader does), not a power cut. */
const DB_PRAGMAS = ["journal_mode = WAL", "synchronous = NORMAL", "busy_timeout = 5000", "foreign_keys = ON"];
const EFFECT_SQL = "INSERT INTO ledger (message_id, payment, run, commit_check) VALUES (?, ?, ?, ?)";

export const GONE = "The queue no longer exists: it was declared auto-delete (or exclusive), so it went away with its last consumer, taking the waiting payments with it.";

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Lets the grading process read what has reached its sockets (the proxy's end of the learner's connection). */
export const wireSettle = async () => {
  for (let i = 0; i < 2; i++) await new Promise<void>((r) => setImmediate(r));
  await sleep(3);
};

/** Fails the check (the learner's code is wrong). */
export function fail(message: string): never {
  throw new CheckFailure(message);
}

export function isCheckFailure(e: unknown): boolean {
  return e instanceof CheckFailure || (e as Error)?.name === "CheckFailure";
}

// ---------------------------------------------------------------- payments

export interface Sent {
  id: string;
  payment: Payment;
  /** The body as published, when not JSON.stringify(payment): a retrying producer re-serializing the same payment. */
  body?: string;
}

/** The same payment serialized another way (key order, spacing): a producer's retry that rebuilt the message. */
export function reserialized(rng: Rng, m: Sent): Sent {
  const { account, amountCents } = m.payment;
  const body = rng.next() < 0.5 ? JSON.stringify({ amountCents, account }) : JSON.stringify({ account, amountCents }, null, 1);
  return { ...m, body };
}

/**
 * Ids that differ from `base` only where naive dedup looks away: case (a NOCASE column, LIKE,
 * toLowerCase), a trailing space (trim) and `_` (a LIKE wildcard). Each is a payment of its own.
 */
export function lookAlikeIds(base: string): string[] {
  return [base.toUpperCase(), `${base} `, base.replace(/[-:" ']/, "_")].filter((id, i, all) => id !== base && all.indexOf(id) === i);
}

const ACCOUNTS = ["acct-17", "acct-23", "acct-42", "acct-51", "acct-68", "acct-90"];

/** Message ids come in several shapes (quotes, colons, spaces): only their bytes identify a message. */
export function makePayments(rng: Rng, n: number, tag: string): Sent[] {
  const salt = Math.floor(rng.next() * 0xffffff).toString(16).padStart(6, "0");
  const shapes = [(i: number) => `pay-${tag}${salt}-${i}`, (i: number) => `pay:${tag}${salt}:${i}`, (i: number) => `pay "${tag}${salt}" #${i}`, (i: number) => `O'Hara ${tag}${salt}/${i}`];
  return Array.from({ length: n }, (_, i) => ({
    id: shapes[i % shapes.length]!(i + 1),
    payment: { account: rng.pick(ACCOUNTS), amountCents: 100 * rng.int(1, 250) },
  }));
}

// ---------------------------------------------------------------- the ledger, the grader's view

interface LedgerRow {
  seq: number;
  message_id: string;
  payment: string;
  run: number;
}

/**
 * The grader's ledger: the only place the effect is recorded, read on the grader's own
 * connection. It lives in the folder of the process that uses it (private to that host): the
 * first run's database is made there, and each restart gets a crash image of the previous one
 * in its own folder. No other check's process can reach it.
 */
export class Ledger {
  /** The database file of the current process. */
  path: string;
  db!: Database.Database;
  /** With `pin`: keeps every commit to the file in its WAL, in order, until the ledger moves. */
  pin: WalPin | null = null;
  private selectAll!: Database.Statement;
  private countOf!: Database.Statement;

  constructor(t: T, path: string, opts: { pin?: boolean } = {}) {
    this.path = path;
    this.connect();
    this.db.exec(`
      CREATE TABLE ledger (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL,
        payment    TEXT NOT NULL,
        run        INTEGER NOT NULL,
        commit_check INTEGER REFERENCES ledger_commit_check (id) DEFERRABLE INITIALLY DEFERRED
      );
      -- Empty: a ledger row pointing at it makes the COMMIT of its transaction fail.
      CREATE TABLE ledger_commit_check (id INTEGER PRIMARY KEY);
      -- A ledger is append-only: a duplicate cannot be tidied away afterwards.
      CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
      CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
    `);
    this.prepare();
    // Before any process opens it: from here on every commit to the file stays in its WAL.
    if (opts.pin) this.pin = WalPin.pin(this.path);
    t.defer(() => this.close());
  }

  private connect(): void {
    this.db = new Database(this.path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("busy_timeout = 5000");
  }

  private prepare(): void {
    this.selectAll = this.db.prepare("SELECT seq, message_id, payment, run FROM ledger ORDER BY seq");
    this.countOf = this.db.prepare("SELECT count(*) AS n FROM ledger WHERE message_id = ?");
  }

  private close(): void {
    this.pin?.close();
    this.pin = null;
    if (this.db.open) this.db.close();
  }

  /**
   * Writes at `path` the database as the crash of the process using it left it (the WAL cut at
   * `walBytes`, or all of it), and reads that from now on: the next process opens it. Only once
   * every process that had the current file open is gone.
   */
  moveTo(path: string, walBytes?: number): void {
    writeCrashImage(this.path, path, walBytes);
    this.close();
    this.path = path;
    this.connect();
    this.prepare();
  }

  total(): number {
    return (this.db.prepare("SELECT count(*) AS n FROM ledger").get() as { n: number }).n;
  }

  rows(): LedgerRow[] {
    return this.selectAll.all() as LedgerRow[];
  }

  /** Committed ledger rows for this message id (a write still inside an open transaction is not seen). */
  count(id: string): number {
    return (this.countOf.get(id) as { n: number }).n;
  }

  committed(id: string | undefined): boolean {
    return id !== undefined && this.count(id) > 0;
  }
}

/**
 * What the processes of the grading left in its shared folder (every host may write all of it):
 * this grader keeps nothing there, so anything is state a process kept outside deps.db (a second
 * database, a plain file), which no crash image covers. Paths relative to the check's folder.
 */
export function leftovers(t: T): string[] {
  return sharedLeftovers(t.sharedDir, () => false);
}

// ---------------------------------------------------------------- the world of one check

/** What the grader does at one of the learner's synchronous calls into it. */
export interface EffectCall {
  run: number;
  /** 1-based, over the check. */
  n: number;
  id: string;
  /** 1 for the first call for this id in this run, 2 for the next, … */
  attempt: number;
  /** After the row was written: whether the grader's connection already saw it (the write was autocommitted, outside any transaction). */
  autocommitted: boolean | null;
}

export interface Plan {
  /** Before the row is written: "throw" (the effect fails, nothing written), "break-commit" (the row makes the COMMIT fail), or a kill. */
  before?(call: EffectCall, run: Run): Promise<"throw" | "break-commit" | "kill" | void> | "throw" | "break-commit" | "kill" | void;
  /** After the row is written, before applyPayment returns. */
  after?(call: EffectCall, run: Run): Promise<"kill" | void> | "kill" | void;
}

/** The check's queue, the grader's connections and ledger, and the runs of the learner's consumer. */
export class World {
  readonly runs: Run[] = [];
  runCount = 0;
  readonly calls: EffectCall[] = [];
  private violationText: string | null = null;
  private readonly waiters = new Set<() => void>();
  plan: Plan = {};

  private observer: Observer | null = null;
  private confirmChannel: ConfirmChannel | null = null;
  /** The grader's own RabbitMQ connection, opened while the first host gets ready. */
  readonly ready: Promise<void>;

  private current: Ledger | null = null;

  private constructor(
    readonly t: T,
    readonly queue: string,
    private readonly pinLedger: boolean,
  ) {
    this.ready = (async () => {
      const gconn = await t.rabbit.connect();
      this.observer = new Observer(gconn);
      this.confirmChannel = await gconn.createConfirmChannel();
      this.confirmChannel.on("error", () => {});
    })();
    this.ready.catch(() => {});
  }

  /** `pin`: the ledger's WAL keeps every commit, so a crash image can be cut at any of them. */
  static async create(t: T, opts: { pin?: boolean } = {}): Promise<World> {
    return new World(t, t.names.queue("payments"), opts.pin === true);
  }

  /** The ledger (made with the first run). */
  get ledger(): Ledger {
    if (!this.current) throw new Error("grader bug: World.ledger before the first run");
    return this.current;
  }

  /** Makes the first run's ledger at `path`. */
  createLedger(path: string): void {
    if (this.current) throw new Error("grader bug: a second ledger; a later run continues from a crash image (RunOptions.restart)");
    this.current = new Ledger(this.t, path, { pin: this.pinLedger });
  }

  /** The grader's observer (after `ready`). */
  get obs(): Observer {
    if (!this.observer) throw new Error("grader bug: World.obs before World.ready");
    return this.observer;
  }

  get violation(): string | null {
    return this.violationText;
  }

  /** Records the first thing seen that the contract forbids; every wait fails with it. */
  violate(text: string): void {
    this.violationText ??= text;
    this.poke();
  }

  poke(): void {
    for (const w of [...this.waiters]) w();
  }

  /**
   * Waits until `cond` holds: re-checked on every frame, callback and host exit, and every 20 ms
   * (for broker counts). Fails with a violation as soon as one is seen, and with `message()`
   * after `ms`.
   */
  async until(cond: () => boolean | Promise<boolean>, ms: number, message: () => string): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.violationText) throw new CheckFailure(this.violationText);
      if (await cond()) {
        if (this.violationText) throw new CheckFailure(this.violationText);
        return;
      }
      if (Date.now() > deadline) throw new CheckFailure(message());
      await new Promise<void>((resolve) => {
        const w = () => {
          this.waiters.delete(w);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(w, 20);
        this.waiters.add(w);
      });
    }
  }

  /** Fails with the violation seen, if any. */
  assertClean(): void {
    if (this.violationText) throw new CheckFailure(this.violationText);
  }

  /** Persistent messages with a messageId, on the grader's confirm channel: queued once this resolves. */
  async publish(msgs: Sent[]): Promise<void> {
    await this.ready;
    const gch = this.confirmChannel!;
    for (const m of msgs) {
      gch.sendToQueue(this.queue, Buffer.from(m.body ?? JSON.stringify(m.payment)), { persistent: true, messageId: m.id, contentType: "application/json" });
    }
    await gch.waitForConfirms();
  }

  /** Calls the learner's declareQueue on a fresh channel of the given host's, through a proxy of the grader's. */
  async declare(host: Host, proxy: ChaosProxy, label = "declareQueue()"): Promise<void> {
    await this.declareOn(host, await host.cap("amqp.channel", { url: proxy.urlFor(this.t.amqpUrl) }), label);
  }

  /** Calls the learner's declareQueue on a channel the host has. */
  async declareOn(host: Host, ch: unknown, label = "declareQueue()"): Promise<void> {
    const t = this.t;
    try {
      await t.within(label, 5000, host.call("declareQueue", ch, this.queue));
    } catch (e) {
      if (isCheckFailure(e)) throw e;
      if (e instanceof HostGone) throw e;
      fail(`${label} for "${this.queue}" threw: ${brokerText(e)}`);
    }
    await this.ready;
    let exists: boolean;
    try {
      exists = (await this.obs.count(this.queue)) !== null;
    } catch (e) {
      if (amqpCode(e) === 405) fail(`The queue declareQueue() made is exclusive (the broker says: ${brokerText(e)}): only the connection that declared it may use it, and it dies with that connection.`);
      throw e;
    }
    if (!exists) fail(`After declareQueue(ch, "${this.queue}") resolved, the broker has no queue of that name.`);
  }

  /** A message id as failure messages show it. */
  describeId(id: string | undefined): string {
    return id === undefined ? "a message without a messageId" : describeValue(id);
  }
}

/** The grader's own view of the broker, on its own connection. */
export class Observer extends QueueObserver {
  /** Takes every ready message off the queue (auto-ack), returning their message ids. Null: no such queue. */
  async drainIds(queue: string): Promise<string[] | null> {
    const ch = await this.throwaway();
    const ids: string[] = [];
    try {
      for (let m = await ch.get(queue, { noAck: true }); m !== false; m = await ch.get(queue, { noAck: true })) {
        ids.push(String(m.properties.messageId));
      }
    } catch (e) {
      if (amqpCode(e) === 404) return null;
      throw e;
    }
    await ch.close().catch(() => {});
    return ids;
  }
}

// ---------------------------------------------------------------- one run of the learner's consumer

export interface RunOptions {
  /** Hold the learner's acks, nacks and rejects at the proxy (never forwarded): nothing is ever settled on the broker. */
  holdSettlements?: boolean;
  /** Hand deliveries over one at a time (see Run.drip). */
  drip?: boolean;
  /** Call declareQueue in this host first. */
  declare?: boolean;
  /** Call into the grader after each ledger row is written too (crash points there; costs a round trip per payment). */
  afterEffect?: boolean;
  /**
   * A later process: once this resolves (the earlier process gone), it gets the crash image of
   * the ledger in its own folder, the WAL cut at the bytes it resolves with (or all of it).
   */
  restart?: Promise<number | undefined>;
}

/** One process of the learner's consumer: a host, the grader's proxy in front of its channel, and the wire as seen there. */
export class Run {
  readonly wire: WireDeliveries;
  consumer: RunningConsumer | null = null;
  /** What startConsumer gets (capabilities built in the host). */
  deps: Record<string, unknown> = {};
  /** The learner's consumer connection on the proxy (the first one after its declare). */
  link = 0;
  dripGate: Gate | null = null;
  /** With drip: how many deliveries have been let through to the learner. */
  dripReleased = 0;
  /** The newest connection seen on the proxy. */
  private lastLink = 0;
  /** The channel closes the broker sent (an error on the learner's channel). */
  brokerCloses: string[] = [];
  private killing: Promise<unknown> | null = null;

  constructor(
    readonly world: World,
    readonly n: number,
    readonly host: Host,
    readonly proxy: ChaosProxy,
  ) {
    this.wire = new WireDeliveries(proxy);
    this.wire.onSettle((ds, s) => judgeSettlement(this, ds, s));
    this.wire.onFrame((f, m, from) => {
      this.lastLink = Math.max(this.lastLink, f.link);
      if (m?.name === "basic.consume" && m.noAck && f.link === this.link) {
        world.violate(`Your consumer consumes with noAck: true (process ${n}'s basic.consume says so): the broker forgets each payment the moment it sends it, so a crash loses every payment in flight. Consume with noAck: false and ack each one once it is committed.`);
      }
      if (from === "broker" && (m?.name === "channel.close" || m?.name === "connection.close") && f.link === this.link) {
        this.brokerCloses.push(`${m.replyCode} ${m.replyText}`);
      }
      world.poke();
    });
    void host.exited.then(() => world.poke());
  }

  /** The connection the proxy saw open last. */
  get newestLink(): number {
    return this.lastLink;
  }

  get name(): string {
    return `process ${this.n}`;
  }

  /** Deliveries on the learner's connection. */
  deliveries(): Delivery[] {
    return this.wire.on(this.link);
  }

  /**
   * SIGKILL, once; resolves when the process is gone. The process is blocked in a call into the
   * grader (or its frame is held at a gate): what it wrote before reaches the proxy first.
   */
  kill(): Promise<unknown> {
    this.killing ??= wireSettle().then(() => this.host.kill());
    return this.killing;
  }

  get killed(): boolean {
    return this.killing !== null;
  }

  /** How many deliveries of this run were acked (by any ack frame). */
  ackedCount(): number {
    return this.deliveries().filter((d) => d.settled?.how === "ack").length;
  }

  /** What the wire showed of this run, for messages (verdicts come from the ledger, the queue and the rules). */
  whatItDid(): string {
    const parts: string[] = [];
    const w = this.wire;
    const consume = w.consumes.find((c) => c.link === this.link);
    if (!consume) parts.push("it never sent basic.consume on the channel it was given");
    if (this.brokerCloses.length) parts.push(`the broker closed its channel: ${describeValue(this.brokerCloses[0], 220)}`);
    const ds = this.deliveries();
    const acked = ds.filter((d) => d.settled?.how === "ack").length;
    if (consume) parts.push(`${ds.length} deliveries reached it, ${acked} were acked`);
    return parts.length ? ` On the wire, in ${this.name}: ${parts.join("; ")}.` : "";
  }

  tail(): string {
    const out = this.host.tail(5);
    return out ? ` Its last output:\n${out}` : "";
  }
}

/** A committed ledger id that naive dedup would take for `id` (case, spaces, `_` and `%` wildcards), if any. */
function lookAlikeInLedger(world: World, id: string): string | undefined {
  const norm = (x: string) => x.trim().toLowerCase();
  const like = new RegExp(`^${norm(id).replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/_/g, ".").replace(/%/g, ".*")}$`, "s");
  return world.ledger
    .rows()
    .map((r) => r.message_id)
    .find((other) => other !== id && (norm(other) === norm(id) || like.test(norm(other))));
}

/** The wire rules, at the moment a settlement reaches the proxy (before it goes on to the broker). */
function judgeSettlement(run: Run, settled: Delivery[], s: Settlement): void {
  const world = run.world;
  if (s.how === "closed" || s.how === "auto") return;
  const how =
    s.how === "ack"
      ? s.multiple
        ? s.tag === 0
          ? "an ackAll() (basic.ack multiple, tag 0: every delivery outstanding on the channel)"
          : `an ack with allUpTo (basic.ack multiple up to delivery tag ${s.tag})`
        : `an ack (basic.ack, delivery tag ${s.tag})`
      : s.how === "recover"
        ? "a recover"
        : `a ${s.how} (delivery tag ${s.tag}${s.multiple ? ", multiple" : ""}, requeue ${s.requeue})`;
  for (const d of settled) {
    const id = d.messageId;
    const done = world.ledger.committed(id);
    const which = `${world.describeId(id)} (delivery ${d.index} to ${run.name}${d.redelivered ? ", redelivered" : ""})`;
    if (s.how === "ack" && !done) {
      const handed = run.dripGate && d.index > 0 && !handedOver(run, d) ? " The grader had not even handed that delivery to your code yet." : "";
      const alike = typeof id === "string" ? lookAlikeInLedger(world, id) : undefined;
      const twin = alike
        ? ` The ledger does hold ${describeValue(alike)}, a payment of its own whose id differs from this one only in case, spaces or a \`_\`: compare message ids exactly (no NOCASE collation, LIKE, trim() or toLowerCase()).`
        : "";
      world.violate(
        `${cap(how)} from ${run.name} settled ${which} while its payment was not committed in the ledger.${handed}${twin} An acked message is gone from the broker: a crash now loses that payment for good. Ack a message only after its own transaction has committed, and with allUpTo/ackAll only when every earlier delivery is committed too.`,
      );
      return;
    }
    if ((s.how === "nack" || s.how === "reject") && !s.requeue && !done) {
      world.violate(`${cap(how)} from ${run.name} dropped ${which}, whose payment was never committed: without requeue the broker discards it (there is no dead-letter queue here), and the payment is lost. Nack with requeue so it is tried again.`);
      return;
    }
    if ((s.how === "nack" || s.how === "reject") && s.requeue && done) {
      world.violate(`${cap(how)} from ${run.name} put ${which} back in the queue although its payment is already committed: a duplicate must be acked (and skipped), or it comes back forever.`);
      return;
    }
  }
}

/** Whether a gated delivery has been let through to the learner. */
function handedOver(run: Run, d: Delivery): boolean {
  return run.dripReleased >= d.index;
}

const cap = (s: string) => s[0]!.toUpperCase() + s.slice(1);

/**
 * Prepares a run: a host (given, or a fresh one), a proxy of its own, the learner's channel
 * through it, the ledger's database and applyPayment; with `declare`, the learner's
 * declareQueue on that channel. The consumer starts with `launch`.
 */
export async function prepareRun(world: World, opts: RunOptions & { host?: Host | Promise<Host> } = {}): Promise<Run> {
  const t = world.t;
  const n = ++world.runCount; // numbered in the order asked for, whatever starts first
  const [host, proxy] = await Promise.all([opts.host ?? t.host(), t.proxy()]);
  const run = new Run(world, n, host, proxy);
  world.runs.push(run);
  if (opts.holdSettlements) proxy.hold("toBroker", isSettlement);
  if (opts.drip) {
    // Every delivery waits at the proxy from the first one on: the broker counts them as sent.
    run.dripGate = proxy.stopAt("toClient", (f) => {
      const d = run.wire.deliveryOf(f);
      return d !== undefined && d.link === run.link && d.index === 1;
    });
  }
  const [channel, db] = await Promise.all([
    host.cap("amqp.channel", { url: proxy.urlFor(t.amqpUrl) }),
    (async () => {
      const path = join(host.dir, DB_FILE);
      if (opts.restart) {
        const walBytes = await opts.restart; // before touching the ledger: the first run makes it
        world.ledger.moveTo(path, walBytes);
      } else world.createLedger(path);
      return host.cap("sqlite.open", { path: DB_FILE, pragmas: DB_PRAGMAS });
    })(),
  ]);
  // Its channel.open-ok has crossed the proxy by now.
  run.link = run.newestLink;
  if (opts.declare) await world.declareOn(host, channel);
  const attempts = new Map<string, number>();
  const pending = new Map<string, { call: EffectCall; before: number }>();
  const applyPayment = await host.cap("sqlite.effect", {
    db,
    sql: EFFECT_SQL,
    before: t.sync(async (args: unknown[]) => {
      const id = String(args[0]);
      const attempt = (attempts.get(id) ?? 0) + 1;
      attempts.set(id, attempt);
      const call: EffectCall = { run: run.n, n: world.calls.length + 1, id, attempt, autocommitted: null };
      world.calls.push(call);
      world.poke();
      if (run.dripGate) {
        // One delivery at a time, and the process is blocked here: whatever it wrote before this
        // call reaches the proxy now. Its ack for this very payment must not be among it.
        await wireSettle();
        const d = run.deliveries().filter((x) => x.messageId === id).at(-1);
        if (d?.settled?.how === "ack" && !world.ledger.committed(id)) {
          world.violate(`${run.name} acked ${world.describeId(id)} (delivery ${d.index}) before it even called applyPayment for it: the broker has forgotten the message, and a crash now loses the payment. Ack only after the transaction has committed.`);
        }
      }
      const decision = await world.plan.before?.(call, run);
      if (decision === "kill") {
        await run.kill();
        return [];
      }
      if (decision === "throw") throw new Error(`the ledger is temporarily unavailable (the grader made applyPayment fail for ${id}; nothing was written)`);
      pending.set(id, { call, before: world.ledger.count(id) });
      // commit_check 0 matches no row of ledger_commit_check: checked at COMMIT (deferred), so the COMMIT fails.
      return [id, JSON.stringify(args[1]) ?? "undefined", run.n, decision === "break-commit" ? 0 : null];
    }),
    after: !opts.afterEffect ? undefined : t.sync(async (args: unknown[]) => {
      const id = String(args[0]);
      const p = pending.get(id);
      pending.delete(id);
      if (!p) return;
      p.call.autocommitted = world.ledger.count(id) > p.before;
      world.poke();
      if ((await world.plan.after?.(p.call, run)) === "kill") await run.kill();
    }),
  });
  run.deps = { channel, queue: world.queue, db, applyPayment };
  return run;
}

/** The learner's startConsumer, in the run's host; resolves once it has. */
export async function launch(run: Run): Promise<Run> {
  const t = run.world.t;
  let consumer: RunningConsumer;
  try {
    consumer = await t.within(`startConsumer() (${run.name})`, 10_000, run.host.call<RunningConsumer>("startConsumer", run.deps));
  } catch (e) {
    if (isCheckFailure(e) || e instanceof HostGone) throw e;
    fail(`startConsumer() failed: ${describeError(e)}`);
  }
  if (!consumer || typeof consumer.stop !== "function") fail(`startConsumer() resolved to ${describeValue(consumer)}, not an object with a stop() method.`);
  run.consumer = consumer;
  return run;
}

export async function startRun(world: World, opts: RunOptions & { host?: Host | Promise<Host> } = {}): Promise<Run> {
  return launch(await prepareRun(world, opts));
}

export function describeError(e: unknown): string {
  if (e instanceof Error) return `${e.name && e.name !== "Error" ? `${e.name}: ` : ""}${brokerText(e)}`;
  return describeValue(e, 300);
}

/** What the broker will hand a run at once: its prefetch (set before consume), or everything with noAck or no prefetch. */
export function expectedInFlight(run: Run, ready: number): number {
  const w = run.wire;
  const consume = w.consumes.find((c) => c.link === run.link);
  if (consume?.method.noAck) return ready;
  const qos = w.qos.filter((q) => q.link === run.link && q.channel === consume?.channel && !q.afterConsume).at(-1);
  const p = qos?.method.prefetchCount ?? 0;
  return p > 0 ? Math.min(p, ready) : ready;
}

/**
 * Hands the deliveries of a run (started with drip) to the learner one at a time: delivery j
 * goes through only once delivery j−1's payment is committed and the learner's reaction (its
 * acks) has had time to reach the proxy; the others wait at the proxy, sent by the broker and
 * not yet received. Stops when the host is gone (a crash point was reached). `onHand(j, d)` runs
 * just before delivery j is let through.
 */
export async function drip(run: Run, total: number, onHand: (j: number, d: Delivery) => void): Promise<void> {
  const world = run.world;
  const gate = run.dripGate!;
  // Before the first goes through, the broker has sent as many as it will at once: an ackAll or
  // allUpTo after the first then covers deliveries the learner has not even received.
  await world.until(
    () => !run.host.alive || run.deliveries().length >= Math.min(2, expectedInFlight(run, total)),
    5000,
    () => `With ${total} payments queued and your consumer registered (${run.name}), only ${run.deliveries().length} were delivered to it within 5 s.${run.whatItDid()}`,
  );
  for (let j = 1; j <= total && run.host.alive; j++) {
    await world.until(
      () => !run.host.alive || run.deliveries()[j - 1]?.messageId !== undefined,
      ONE_PAYMENT_MS,
      () => `After payment #${j - 1} was committed, the broker delivered nothing more to your consumer within ${ONE_PAYMENT_MS / 1000} s: ${run.deliveries().length} deliveries so far.${run.whatItDid()}`,
    );
    if (!run.host.alive) break;
    const d = run.deliveries()[j - 1]!;
    onHand(j, d);
    run.dripReleased = j;
    gate.moveTo((f) => {
      const x = run.wire.deliveryOf(f);
      return x !== undefined && x.link === run.link && x.index === j + 1;
    });
    await world.until(
      () => !run.host.alive || world.ledger.committed(d.messageId),
      ONE_PAYMENT_MS,
      () => `Payment ${world.describeId(d.messageId)} was handed to your consumer (delivery ${j} of ${run.name}) and is not committed in the ledger ${ONE_PAYMENT_MS / 1000} s later.${run.whatItDid()}${run.tail()}`,
    );
    if (!run.host.alive) break;
    try {
      await run.host.turns();
    } catch (e) {
      if (e instanceof HostGone) break;
      throw e;
    }
    await wireSettle();
  }
}

/**
 * Waits until every id in `ids` is committed, nothing is ready in the queue, and the run has
 * settled everything it received. On a timeout (or a long standstill) the failure says what is
 * missing.
 */
export async function waitSettled(run: Run, ids: string[], when: string): Promise<void> {
  const world = run.world;
  await world.ready;
  const started = Date.now();
  let progress = "";
  let quietSince = Date.now();
  const missing = new Set(ids);
  let rowsSeen = -1;
  let brokerAt = 0;
  let idleSince = 0;
  let last = { missing: ids.length, ready: 0, open: 0 };
  await world.until(
    async () => {
      if (!run.host.alive) {
        const end = await run.host.exited;
        fail(`Your consumer's ${run.name} ended (${describeEnd(end)}) ${when}, with ${missing.size} payment(s) still not applied.${run.whatItDid()}${run.tail()}`);
      }
      const rows = world.ledger.total();
      if (rows !== rowsSeen) for (const id of missing) if (world.ledger.committed(id)) missing.delete(id);
      rowsSeen = rows;
      const open = run.wire.outstanding(run.link).length;
      const settledCount = run.wire.deliveries.filter((d) => d.settled).length;
      // The broker is asked only when it can decide (or now and then, to notice a vanished queue).
      let ready = last.ready;
      if ((missing.size === 0 && open === 0) || Date.now() - brokerAt > 250) {
        const q = await world.obs.count(world.queue);
        brokerAt = Date.now();
        if (!q) fail(`${when}: ${GONE}`);
        ready = q.messageCount;
      }
      last = { missing: missing.size, ready, open };
      if (missing.size === 0 && open === 0 && ready === 0) return true;
      // Everything applied, and deliveries still open: give the process a few turns (a batch of
      // acks goes out when it is idle), then no more than a moment.
      if (missing.size === 0 && ready === 0 && open > 0) {
        if (!idleSince) {
          idleSince = Date.now();
          await run.host.turns().catch(() => {});
          await wireSettle();
        } else if (Date.now() - idleSince > IDLE_OPEN_MS) fail(stuck(run, ids, when, started, last));
      } else idleSince = 0;
      const now = `${rows}/${run.wire.deliveries.length}/${settledCount}/${ready}`;
      if (now !== progress) quietSince = Date.now();
      progress = now;
      if (Date.now() - quietSince > QUIET_MS || run.brokerCloses.length > 0) fail(stuck(run, ids, when, started, last));
      const looping = loopingNacks(run);
      if (looping) fail(`${when}: ${looping}${run.tail()}`);
      return false;
    },
    Math.max(SETTLE_MS, SETTLE_PER_PAYMENT_MS * ids.length),
    () => stuck(run, ids, when, started, last),
  );
}

/** A payment nacked back again and again, never committed: its transaction fails every time, and nothing of the grader's makes it. */
function loopingNacks(run: Run): string | null {
  const world = run.world;
  const nacks = new Map<string, number>();
  for (const d of run.deliveries()) {
    if (d.messageId === undefined || !d.settled || d.settled.how === "ack" || !d.settled.requeue) continue;
    nacks.set(d.messageId, (nacks.get(d.messageId) ?? 0) + 1);
  }
  for (const [id, n] of nacks) {
    if (n < 20 || world.ledger.committed(id)) continue;
    const calls = world.calls.filter((c) => c.id === id).length;
    return `${world.describeId(id)} was delivered to ${run.name} and put back ${n} times, never committed; applyPayment was called for it ${calls} time(s). Your own code fails on it every time${calls === 0 ? ", before applyPayment" : ""}: an id with quotes, colons or spaces is an ordinary message id.`;
  }
  return null;
}

function stuck(run: Run, ids: string[], when: string, started: number, last: { missing: number; ready: number; open: number }): string {
  const world = run.world;
  const took = ((Date.now() - started) / 1000).toFixed(1);
  const h = new History();
  for (const id of ids) h.record("produced", id);
  for (const r of world.ledger.rows()) h.record("applied", r.message_id);
  const lost = h.noLoss() ?? "every payment was applied";
  const openDs = run.wire.outstanding(run.link);
  const dups = openDs.filter((d) => world.ledger.committed(d.messageId));
  const open = openDs.length
    ? ` ${openDs.length} deliver${openDs.length === 1 ? "y was" : "ies were"} received and never acked or nacked (${openDs.slice(0, 3).map((d) => world.describeId(d.messageId)).join(", ")}${openDs.length > 3 ? ", …" : ""})` +
      (dups.length ? `; ${dups.length === openDs.length ? "all" : dups.length} of them already applied: a duplicate must be acked too.` : ".")
    : "";
  return (
    `${when}, within ${took} s: ${lost}; ${last.ready} message(s) still wait in the queue.${open}${run.whatItDid()}` +
    (last.missing ? " A payment that is not applied must stay in the queue (unacked, or nacked with requeue) until it is." : "") +
    run.tail()
  );
}

function describeEnd(end: unknown): string {
  const e = end as { kind?: string; code?: number | null; signal?: string | null };
  if (e.kind === "exit") return e.signal ?? `exit code ${e.code}`;
  return e.kind ?? "ended";
}

/**
 * The learner's stop(), then (once the process has turned its loop, so its last acks are on
 * the wire) `atStopped`, then the process is killed: whatever it never acked goes back to the queue.
 */
export async function finish(run: Run, atStopped?: () => Promise<void>): Promise<void> {
  const world = run.world;
  const t = world.t;
  try {
    await t.within(`stop() (${run.name})`, 8000, run.consumer!.stop());
  } catch (e) {
    if (isCheckFailure(e) || e instanceof HostGone) throw e;
    fail(`stop() threw: ${describeError(e)}`);
  }
  await run.host.turns();
  // The acks it sent on its way out reach the proxy; a delivery it never settles stays open.
  await world.until(() => run.wire.outstanding(run.link).length === 0, 1000, () => "").catch((e: unknown) => {
    if (!isCheckFailure(e) || world.violation) throw e;
  });
  world.assertClean();
  if (atStopped) await atStopped();
  await run.kill();
}

/** Waits until the broker has noticed a process is gone: its consumer removed, its unacked messages back in the queue. */
export async function waitNoConsumer(world: World, what: string): Promise<void> {
  await world.ready;
  let consumers = 0;
  await world.until(
    async () => {
      const q = await world.obs.count(world.queue);
      if (!q) fail(`${what}: ${GONE}`);
      consumers = q.consumerCount;
      return consumers === 0;
    },
    5000,
    () => `${what}, the queue still has ${consumers} consumer(s) 5 s later.`,
  );
}

/** Checks the ledger against what was published: each id exactly once, with its own payment. */
export function verifyLedger(world: World, sent: Sent[], describeRun: (n: number) => string): void {
  const t = world.t;
  const rows = world.ledger.rows();
  const expected = new Map(sent.map((m) => [m.id, m.payment]));
  const unknown = rows.find((r) => !expected.has(r.message_id));
  if (unknown) {
    fail(`applyPayment was called with message id ${describeValue(unknown.message_id)}, which is not the messageId of any message the grader published (they look like ${describeValue(sent[0]!.id)}). Pass msg.properties.messageId.`);
  }
  for (const r of rows) {
    let got: unknown;
    try {
      got = JSON.parse(r.payment);
    } catch {
      got = r.payment;
    }
    if (!isDeepStrictEqual(got, expected.get(r.message_id))) {
      fail(`applyPayment(${describeValue(r.message_id)}, …) got the payment ${describeValue(got)}, but that message's body is ${JSON.stringify(expected.get(r.message_id))}. Pass JSON.parse of the body.`);
    }
  }
  const seen = new Map<string, LedgerRow>();
  for (const r of rows) {
    const first = seen.get(r.message_id);
    if (first) {
      const where = first.run === r.run ? `both times by ${describeRun(r.run)}` : `first by ${describeRun(first.run)}, then again by ${describeRun(r.run)}`;
      const outside = world.calls.some((c) => c.id === r.message_id && c.autocommitted) ? " (its applyPayment call committed on its own, outside any transaction)" : "";
      fail(`Payment ${describeValue(r.message_id)} was applied twice, ${where}${outside}: the account was credited twice. Of ${sent.length} payments, the ledger holds ${rows.length} rows.`);
    }
    seen.set(r.message_id, r);
  }
  const h = new History();
  for (const m of sent) h.record("produced", m.id);
  for (const r of rows) h.record("applied", r.message_id);
  const lost = h.noLoss();
  if (lost) fail(`Payment ${lost}: the broker had handed it over, and it is gone without its effect.`);
}

/** After the last process is gone, nothing may be back in the queue: everything was acked. */
export async function verifyQueueEmpty(world: World): Promise<void> {
  await waitNoConsumer(world, "After your consumer's last process ended");
  const left = await world.obs.drainIds(world.queue);
  if (left === null) fail(`After your consumer stopped: ${GONE}`);
  if (left.length === 0) return;
  const done = left.filter((id) => world.ledger.committed(id));
  fail(
    `After your consumer stopped and its process ended, ${left.length} message(s) came back to the queue (${left.slice(0, 3).map((x) => describeValue(x)).join(", ")}${left.length > 3 ? ", …" : ""}): they were delivered and never acked.` +
      (done.length ? ` ${describeValue(done[0])} was already applied: a message you skip as a duplicate must still be acked, or it is redelivered forever.` : ""),
  );
}
