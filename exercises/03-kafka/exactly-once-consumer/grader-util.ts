// The grader's side of the exactly-once-consumer exercise. It writes the stream, owns the
// ledger, runs the learner's consumer in submission hosts, and judges only from what it sees
// itself:
//   - every request the learner's kafkajs client sends, on a Kafka proxy of the grader's (one
//     per host): offset commits are compared with the ledger before they go on, fetches show
//     how far the consumer got and with which isolation, durable requests can be held and
//     dropped with a SIGKILL so that they never reach the broker;
//   - applyEffect's before/after callbacks (synchronous: the host blocks there, so a kill there
//     is exact, and a thrown error is the effect failing);
//   - the SQLite file, on the grader's own connections: the ledger, the write lock, and the
//     WAL, which holds every transaction the learner committed, in order (a grader's reader
//     pins it: nothing is checkpointed into the database file while a process runs). The
//     database a restarted process finds is a crash image cut from that WAL: everything up to
//     the moment of the crash, nothing after it;
//   - the group's committed offsets and members, through its own admin client.
import { join } from "node:path";
import Database from "better-sqlite3";
import type BetterSqlite3 from "better-sqlite3";
import type { Admin, Kafka, Producer } from "kafkajs";
import { ApiKey, DURABLE_APIS, History, KafkaProxy, LabError, WalPin, decodeFetch, decodeJoinGroup, decodeOffsetCommit, decodeTxnOffsetCommit, firstCommitWhere, leaveGroup, sharedLeftovers, writeCrashImage } from "../../../src/kit/index.ts";
import type { CheckContext, CommitEntry, FetchSeen, Host, HostEnd, KafkaRequest, Verdict } from "../../../src/kit/index.ts";
import type { RunningConsumer, StartConsumer } from "../../../src/contracts/exactly-once-consumer.ts";

export type Submission = { startConsumer: StartConsumer };
export type T = CheckContext<Submission>;

/** The service's database, in each host's own folder. */
const DB_FILE = "service.db";
/** The effect: one ledger row, written through the learner's connection. */
const EFFECT_SQL = "INSERT INTO ledger (run, attempt, topic, partition, offset, key, value) VALUES (?, ?, ?, ?, ?, ?, ?)";
/** A consumer that fetched to the end and changed nothing for this long has done all it will. */
const QUIET_MS = 1000;
/** An effect whose write has not returned after this long is waiting for a lock. */
const STALL_MS = 4000;
/**
 * The learner's client retries quickly: a failed eachMessage is retried by kafkajs after
 * initialRetryTime, doubling; a local broker needs no more patience than this.
 */
const LEARNER_RETRY = { retries: 8, initialRetryTime: 20, maxRetryTime: 500 };
/** Caps the consumer's fetch long poll (kafkajs's default is 5 s): a caught-up consumer stops at once. */
const FETCH_MAX_WAIT_MS = 25;

/** How a record got into the log: only "plain" and "committed" ones may ever be applied. */
export type RecordKind = "plain" | "committed" | "aborted";

/** One record the grader wrote, with the offset the broker gave it. */
export interface Rec {
  partition: number;
  offset: number;
  key: string;
  value: string;
  kind: RecordKind;
}

/** A message to write: where, and what. */
export interface Spec {
  partition: number;
  key: string;
  value: string;
}

interface LedgerRow {
  seq: number;
  run: number;
  attempt: number;
  topic: string;
  partition: number;
  offset: number;
  key: string | null;
  value: string | null;
}

/** One call of applyEffect, as the grader's callbacks saw it. */
export interface EffectCall {
  /** "partition@offset" of the record it was called with. */
  id: string;
  rec: Rec | undefined;
  /** 1 for the first call for this record in this check, 2 for the next, … */
  attempt: number;
  /** The ledger row was written (after() ran). */
  written: boolean;
  at: number;
}

const id = (partition: number, offset: number | string): string => `${partition}@${offset}`;

export function describeRec(r: Rec): string {
  return `partition ${r.partition}, offset ${r.offset} (key "${r.key}", value "${r.value}")`;
}

const RUN_NAMES = ["", "the first process", "the restarted process"];
const runName = (run: number): string => RUN_NAMES[run] ?? `process #${run}`;

/** Messages whose keys and values repeat on purpose: neither identifies a record. */
export function makeSpecs(t: T, count: number, partitions: number, tag = ""): Spec[] {
  const specs: Spec[] = [];
  for (let i = 0; i < count; i++) {
    // Every partition gets messages: offsets alone repeat across partitions.
    const partition = i < partitions ? i : t.rng.int(0, partitions - 1);
    specs.push({ partition, key: `account-${t.rng.int(1, 3)}`, value: `${tag}deposit ${t.rng.pick([5, 10, 20])}` });
  }
  return t.rng.shuffle(specs);
}

function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name === "Error" ? "" : e.name + ": "}${e.message}`;
  return String(e);
}

function endText(end: HostEnd): string {
  switch (end.kind) {
    case "exit":
      return end.exitCalled !== null ? `your code called process.exit(${end.exitCalled})` : `${end.signal ?? `exit code ${end.code}`}`;
    case "memory":
      return `it used ${end.rssMb} MiB of memory, over the sandbox's limit`;
    case "output":
      return `it printed more than ${Math.round(end.bytes / 1024)} KiB`;
    case "load-failed":
      return "your file failed to load";
    case "killed":
      return "killed";
  }
}

class LedgerRefusedError extends Error {
  override name = "LedgerRefusedError";
}

/** One process running the learner's consumer: its host, its proxy, and what the grader saw of it. */
export class Run {
  host!: Host;
  proxy!: KafkaProxy;
  /** Resolves with the kafka client capability once the host and proxy are up. */
  ready!: Promise<unknown>;
  /** The grader's connections to this process's database: reads, the WAL pin, the write-lock probe. */
  reader!: BetterSqlite3.Database;
  /** Keeps every commit of this process in the database's WAL (a crash image is cut from it). */
  pin!: WalPin;
  private probe!: BetterSqlite3.Database;
  running: RunningConsumer | null = null;
  /** Set when the grader killed it: everything it sends from then on is dropped. */
  killedByGrader = false;
  ended: HostEnd | null = null;
  /** A problem seen in a callback or on the wire, raised by the next wait. */
  fatal: string | null = null;
  // What crossed the proxy.
  readonly joinedGroups = new Set<string>();
  fetches = 0;
  /** Fetches after which every partition's latest fetch asked for its end. */
  fetchesAtEnd = 0;
  private readonly fetchOffsets = new Map<number, bigint>();
  firstFetch: FetchSeen | null = null;
  readUncommitted = false;
  /** Offset commits (plain or transactional) for the check's group and topic. */
  commits = 0;
  /** The highest offset per partition this process's commits carried on the wire. */
  readonly committedOnWire = new Map<number, number>();
  // What the effect callbacks saw.
  readonly effects: EffectCall[] = [];
  /** The call whose write has not returned yet. */
  pending: EffectCall | null = null;
  /** The check's say on a request, after the run's own bookkeeping. */
  gate: ((req: KafkaRequest) => Verdict | void | Promise<Verdict>) | null = null;
  /** The check's say in applyEffect: throw to make the effect fail, or kill the run right there. */
  onBefore: ((call: EffectCall) => void) | null = null;
  onAfter: ((call: EffectCall) => void) | null = null;
  private readonly holds: ((v: Verdict) => void)[] = [];

  constructor(
    readonly lab: Lab,
    readonly number: number,
  ) {}

  get name(): string {
    return runName(this.number);
  }

  get dir(): string {
    return this.host.dir;
  }

  /** Opens the grader's connections to the database in this host's folder (which must exist). */
  openDb(t: T): void {
    const path = join(this.dir, DB_FILE);
    // A read transaction begun before the learner's first write, on a checkpointed database:
    // no checkpoint can copy a later frame into the database file, nor restart the WAL, while
    // it is open. Every transaction the learner commits stays in the WAL, in order.
    this.pin = WalPin.pin(path);
    this.reader = new Database(path);
    this.reader.pragma("busy_timeout = 5000");
    this.probe = new Database(path);
    this.probe.pragma("busy_timeout = 0");
    t.defer(() => {
      for (const db of [this.probe, this.reader]) db.close();
      this.pin.close();
    });
  }

  /** Whether some connection holds the database's write lock right now (tried without waiting). */
  writeLockHeld(): boolean {
    try {
      this.probe.exec("BEGIN IMMEDIATE");
    } catch (e) {
      if ((e as { code?: string }).code === "SQLITE_BUSY") return true;
      throw e;
    }
    this.probe.exec("ROLLBACK");
    return false;
  }

  /** Holds a request until the run is killed (then it is dropped). */
  hold(): Promise<Verdict> {
    if (this.killedByGrader) return Promise.resolve("drop");
    return new Promise((resolve) => this.holds.push(resolve));
  }

  /** SIGKILL, now: nothing it sent that the proxy still has reaches the broker. */
  kill(): void {
    if (this.killedByGrader) return;
    this.killedByGrader = true;
    this.proxy.handler = () => "drop";
    void this.host.kill();
    this.proxy.cut();
    for (const h of this.holds.splice(0)) h("drop");
  }

  /** The proxy's handler: bookkeeping, the commit inspection, then the check's gate. */
  onRequest(req: KafkaRequest): Verdict | void | Promise<Verdict> {
    if (this.killedByGrader) return "drop";
    const lab = this.lab;
    const commit = decodeOffsetCommit(req) ?? decodeTxnOffsetCommit(req);
    if (commit) lab.inspectCommit(this, commit.groupId, commit.entries);
    if (req.apiKey === ApiKey.JoinGroup) {
      const join = decodeJoinGroup(req);
      if (join) this.joinedGroups.add(join.groupId);
    }
    if (req.apiKey === ApiKey.Fetch) {
      const f = decodeFetch(req);
      const mine = f?.partitions.filter((p) => p.topic === lab.topic) ?? [];
      if (f && mine.length) {
        this.fetches++;
        this.firstFetch ??= f;
        if (f.isolationLevel !== 1) this.readUncommitted = true;
        // Per partition, where its latest fetch asked to read: several consumers of one process
        // each fetch their own partitions.
        for (const x of mine) this.fetchOffsets.set(x.partition, x.fetchOffset);
        if (lab.atEnd([...this.fetchOffsets].map(([partition, fetchOffset]) => ({ partition, fetchOffset })))) this.fetchesAtEnd++;
      }
    }
    return this.gate?.(req);
  }

  /** applyEffect's before(): checks the call, counts the attempt, asks the check, returns the row. */
  before(args: unknown[], state: { inTransaction: boolean }): unknown[] {
    const record = args[0] as { topic?: unknown; partition?: unknown; message?: { offset?: unknown; key?: unknown; value?: unknown } } | undefined;
    const message = record?.message;
    if (!record || typeof record.topic !== "string" || typeof record.partition !== "number" || !message || typeof message.offset !== "string") {
      this.fatal ??= "applyEffect() needs the consumed record: { topic, partition, message } as kafkajs hands them to eachMessage.";
      throw new TypeError(this.fatal);
    }
    const key = id(record.partition, message.offset);
    const attempt = this.lab.nextAttempt(key);
    const call: EffectCall = { id: key, rec: this.lab.record(record.partition, message.offset), attempt, written: false, at: performance.now() };
    this.effects.push(call);
    this.pending = call;
    // Outside any transaction of deps.db, the write lock can only be another connection's: the
    // effect's write would wait for it, then fail with SQLITE_BUSY.
    try {
      if (!state.inTransaction && this.writeLockHeld()) {
        this.fatal ??= this.lab.busyText(call, "your deps.db had no transaction open");
        throw new Error(this.fatal);
      }
      this.onBefore?.(call);
    } catch (e) {
      this.pending = null; // nothing is written: no lock to wait for
      throw e;
    }
    const text = (b: unknown) => (Buffer.isBuffer(b) ? b.toString() : b === null || b === undefined ? null : String(b));
    return [this.number, attempt, record.topic, record.partition, Number(message.offset), text(message.key), text(message.value)];
  }

  /** applyEffect's after(): the row is written (inside the learner's transaction, if one is open). */
  after(): void {
    const call = this.pending;
    this.pending = null;
    if (!call) return;
    call.written = true;
    this.onAfter?.(call);
  }
}

export type UntilResult = "done" | "killed" | "timeout";

/**
 * One check's world: a topic, a consumer group, the records the grader wrote, and the processes
 * that ran the learner's consumer.
 */
export class Lab {
  readonly records: Rec[] = [];
  readonly runs: Run[] = [];
  /** Offset commits that covered a record whose effect was not in the database yet. */
  readonly violations: { rec: Rec; text: string }[] = [];
  /** Attempts whose row was written and that then threw ("partition@offset#attempt"): their row must not survive. */
  readonly failedWrites = new Set<string>();
  private wrongGroup: string | null = null;
  private readonly byId = new Map<string, Rec>();
  private readonly attempts = new Map<string, number>();
  private readonly ends = new Map<number, number>();
  private producer: Producer | undefined;
  private txProducer: Producer | undefined;
  private admin!: Admin;
  /** Processes got ready ahead of time, in the order they will start. */
  private readonly prepared: Run[] = [];

  private constructor(
    readonly t: T,
    readonly topic: string,
    readonly groupId: string,
    readonly partitions: number,
  ) {}

  /** `processes`: how many will run (2 for a crash and its restart), all got ready from the start. */
  static async create(t: T, partitions = 2, processes = 1): Promise<Lab> {
    const lab = new Lab(t, t.names.topic("deposits"), t.names.group("ledger-service"), partitions);
    // The first process starts while the topic is created and the messages are written.
    for (let i = 0; i < processes; i++) lab.prepare();
    const [admin] = await Promise.all([t.kafka.admin(), t.kafka.createTopics([lab.topic], partitions)]);
    lab.admin = admin;
    // Teardown runs after the hosts are killed: their members never left. Removing them lets
    // the group be deleted at once.
    t.defer(() => lab.evictMembers());
    return lab;
  }

  private get broker(): string {
    return this.t.kafka.brokers[0]!;
  }

  private add(spec: Spec, offset: number, kind: RecordKind): void {
    const rec: Rec = { ...spec, offset, kind };
    this.records.push(rec);
    this.byId.set(id(rec.partition, offset), rec);
    this.ends.set(rec.partition, Math.max(this.ends.get(rec.partition) ?? 0, offset + 1));
  }

  record(partition: number, offset: string | number): Rec | undefined {
    return this.byId.get(id(partition, offset));
  }

  nextAttempt(key: string): number {
    const n = (this.attempts.get(key) ?? 0) + 1;
    this.attempts.set(key, n);
    return n;
  }

  attemptsOf(rec: Rec): number {
    return this.attempts.get(id(rec.partition, rec.offset)) ?? 0;
  }

  /** Writes plain (non-transactional) messages in one send: in order within each partition. */
  async writePlain(specs: Spec[]): Promise<void> {
    if (!this.producer) {
      // Idempotent: kafkajs retries a multi-partition send as a whole when one partition fails,
      // and a plain producer would then write the others twice (the broker deduplicates here).
      const kafka = await this.t.kafka.client({ retry: { retries: 8, initialRetryTime: 50, maxRetryTime: 1000 } });
      const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
      await producer.connect();
      this.t.defer(() => producer.disconnect());
      this.producer = producer;
    }
    const byPartition = [...Array(this.partitions).keys()].map((p) => specs.filter((s) => s.partition === p));
    const metas = await this.producer.send({ topic: this.topic, acks: -1, messages: byPartition.flat().map((s) => ({ partition: s.partition, key: s.key, value: s.value })) });
    byPartition.forEach((mine, p) => {
      if (mine.length === 0) return;
      const meta = metas.find((m) => m.partition === p);
      if (!meta) throw new LabError(`Kafka: the grader's send to partition ${p} returned no offset.`);
      mine.forEach((s, i) => this.add(s, Number(meta.baseOffset) + i, "plain"));
    });
  }

  /** Writes messages inside one transaction, then commits or aborts it. */
  async writeTransaction(specs: Spec[], outcome: "commit" | "abort"): Promise<void> {
    const tx = await this.openTransaction(specs, outcome);
    await tx.end();
  }

  /** Transactions the grader has written to and not ended yet. */
  openTransactions = 0;

  /**
   * Writes messages inside one transaction and leaves it open: read_committed consumers stop at
   * its first record (the last stable offset) until `end()` commits or aborts it, as `outcome`
   * says. Its records count as `outcome`'s from the moment they are written.
   */
  async openTransaction(specs: Spec[], outcome: "commit" | "abort"): Promise<{ end(): Promise<void>; firstOffsets: Map<number, number> }> {
    if (!this.txProducer) {
      const kafka: Kafka = await this.t.kafka.client({ retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 } });
      this.txProducer = kafka.producer({ transactionalId: this.t.names.transactionalId("writer"), idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
      await this.txProducer.connect();
      const producer = this.txProducer;
      this.t.defer(() => producer.disconnect());
    }
    const tx = await this.txProducer.transaction();
    const firstOffsets = new Map<number, number>();
    this.openTransactions++;
    try {
      for (let p = 0; p < this.partitions; p++) {
        const mine = specs.filter((s) => s.partition === p);
        if (mine.length === 0) continue;
        const [meta] = await tx.send({ topic: this.topic, messages: mine.map((s) => ({ partition: p, key: s.key, value: s.value })) });
        const base = Number(meta!.baseOffset);
        firstOffsets.set(p, base);
        mine.forEach((s, i) => this.add(s, base + i, outcome === "commit" ? "committed" : "aborted"));
      }
    } catch (e) {
      this.openTransactions--;
      await tx.abort().catch(() => {});
      throw e;
    }
    return {
      firstOffsets,
      end: async () => {
        if (outcome === "commit") await tx.commit();
        else await tx.abort();
        this.openTransactions--;
      },
    };
  }

  /**
   * Waits until the last stable offset of every partition has passed every transactional record:
   * the commit and abort markers are in the log (they land a moment after commit()/abort()).
   */
  private async waitForMarkers(): Promise<void> {
    const until = Date.now() + 10_000;
    for (;;) {
      const lso = new Map((await this.admin.fetchTopicOffsets(this.topic)).map((p) => [p.partition, Number(p.offset)]));
      const open = this.records.filter((r) => r.kind !== "plain" && (lso.get(r.partition) ?? 0) <= r.offset);
      if (open.length === 0) return;
      if (Date.now() > until) throw new LabError("Kafka: the grader's own transactions did not end within 10 s.");
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Ends the stream with one plain message per partition (after the transaction markers), so the
   * last record of each partition is one the consumer sees: committing past it reaches the log end.
   */
  async writeClosing(): Promise<void> {
    const t = this.t;
    if (this.records.some((r) => r.kind !== "plain")) await this.waitForMarkers();
    await this.writePlain(Array.from({ length: this.partitions }, (_, partition) => ({ partition, key: `account-${t.rng.int(1, 3)}`, value: `deposit ${t.rng.pick([5, 10, 20])}` })));
    const latest = await this.admin.fetchTopicOffsets(this.topic);
    for (const p of latest) {
      if (Number(p.offset) !== this.ends.get(p.partition)) {
        throw new LabError(`Kafka: partition ${p.partition} ends at ${p.offset}, but the grader's last message there is at ${(this.ends.get(p.partition) ?? 0) - 1}.`);
      }
    }
  }

  /** The records a correct consumer applies: everything but aborted transactions. */
  get expected(): Rec[] {
    return this.records.filter((r) => r.kind !== "aborted");
  }

  get endOffsets(): Map<number, number> {
    return this.ends;
  }

  /** A fetch that asks every partition at its end: everything before was processed (kafkajs fetches again only then). */
  atEnd(partitions: { partition: number; fetchOffset: bigint }[]): boolean {
    return [...this.ends].every(([p, end]) => partitions.some((x) => x.partition === p && x.fetchOffset >= BigInt(end)));
  }

  /**
   * A record to crash at: one with at least two more records after it on its partition. With
   * `earlier`, also one with records before it there, so it falls inside a fetched batch, not at
   * its start (where a batch-wide rollback has nothing before it to lose).
   */
  pickVictim(opts: { earlier?: boolean } = {}): Rec {
    const candidates = this.expected.filter(
      (r) => this.expected.some((o) => o.partition === r.partition && o.offset > r.offset + 1) && (!opts.earlier || this.expected.some((o) => o.partition === r.partition && o.offset < r.offset)),
    );
    return this.t.rng.pick(candidates);
  }

  // ---------------------------------------------------------------------------------------------
  // Processes

  /**
   * Gets the next process ready ahead of time, while topics and messages are still being
   * written: its host, its proxy, and the kafka client capability (kafkajs loads in the host).
   */
  prepare(): Run {
    const t = this.t;
    const run = new Run(this, this.runs.length + 1);
    this.runs.push(run);
    this.prepared.push(run);
    run.ready = (async () => {
      const [host, proxy] = await Promise.all([t.host(), KafkaProxy.start(this.broker, { fetchMaxWaitMs: FETCH_MAX_WAIT_MS })]);
      t.defer(() => proxy.close());
      run.host = host;
      run.proxy = proxy;
      void host.exited.then((end) => (run.ended = end));
      proxy.handler = (req) => run.onRequest(req);
      const kafka = await host.cap("kafka.client", { brokers: t.kafka.brokers, via: proxy.address, clientId: "ledger-service", config: { retry: LEARNER_RETRY } });
      return kafka;
    })();
    run.ready.catch(() => {});
    return run;
  }

  /**
   * Starts the learner's consumer in the next prepared process: the database (a fresh one, or
   * the crash image the previous process left), its capabilities, then startConsumer().
   */
  async start(opts: { after?: Run; walBytes?: number | undefined; arm?: (run: Run) => void } = {}): Promise<Run> {
    const t = this.t;
    const run = this.prepared.shift() ?? this.prepare();
    const kafka = await run.ready;
    const host = run.host;
    if (opts.after) {
      // A crashed process's durable state is what is on disk: the crash image of its database.
      writeCrashImage(join(opts.after.dir, DB_FILE), join(host.dir, DB_FILE), opts.walBytes);
    } else {
      const db = new Database(join(host.dir, DB_FILE));
      db.pragma("journal_mode = WAL");
      // No unique constraint on purpose: a duplicate effect shows as a second row.
      db.exec(`CREATE TABLE ledger (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        key TEXT,
        value TEXT
      )`);
      db.pragma("wal_checkpoint(TRUNCATE)");
      db.close();
    }
    run.openDb(t);
    const db = await host.cap("sqlite.open", { path: DB_FILE, pragmas: ["busy_timeout = 5000"] });
    const applyEffect = await host.cap("sqlite.effect", {
      db,
      sql: EFFECT_SQL,
      before: t.sync((args: unknown[], state: { inTransaction: boolean }) => run.before(args, state)),
      after: t.sync(() => run.after()),
    });
    opts.arm?.(run);
    host
      .call<RunningConsumer>("startConsumer", { kafka, topic: this.topic, groupId: this.groupId, db, applyEffect })
      .then(
        (running) => {
          if (!running || typeof (running as { stop?: unknown }).stop !== "function") {
            run.fatal ??= `startConsumer() resolved to ${typeof running === "object" ? JSON.stringify(running) : String(running)}; it must resolve to an object with stop().`;
          } else run.running = running;
        },
        (e: unknown) => {
          if (!run.killedByGrader && !run.ended) run.fatal ??= `startConsumer() failed in ${run.name}: ${errorText(e)}`;
        },
      );
    return run;
  }

  /**
   * The restart after `first` was killed: its members leave the group (as the broker would after
   * their session timeout), and a fresh process resumes from the crash image and the committed
   * offsets.
   */
  async restart(first: Run, walBytes?: number): Promise<Run> {
    if (!first.killedByGrader) throw new LabError("grader bug: a restart of a process the grader did not kill");
    await first.host.exited;
    // The restart gets deps.db's file as the crash left it, and nothing else of the first
    // process: state it kept in the folder every host may write would survive whole.
    const left = sharedLeftovers(this.t.sharedDir, () => false);
    if (left.length) {
      this.t.fail(
        `When ${first.name} was killed, the grading's shared folder held ${left.slice(0, 3).map((f) => JSON.stringify(f)).join(", ")}${left.length > 3 ? `, … (${left.length} in all)` : ""}: your consumer keeps state outside deps.db. ` +
          "A second database or file commits on its own, never together with the effect, so a crash between the two leaves one without the other. Keep your 'processed' rows in tables of deps.db.",
      );
    }
    await this.evictMembers();
    return this.start({ after: first, walBytes });
  }

  /** Removes every member of the group: call it only when none of them is alive. */
  async evictMembers(): Promise<void> {
    const { groups } = await this.admin.describeGroups([this.groupId]);
    const members = groups[0]?.members.map((m) => m.memberId) ?? [];
    if (members.length) await leaveGroup(this.broker, this.groupId, members);
  }

  /** Stops a run cleanly through the learner's stop(): it must resolve. */
  async stop(run: Run, ms = 8000): Promise<void> {
    if (!run.running) return;
    await this.t.within(`${run.name}'s stop()`, ms, run.running.stop());
    // stop() disconnects (the contract): every connection of the client goes through run.proxy.
    // The host's sockets reach the proxy through its gateway, so a closed one is seen a moment later.
    const until = Date.now() + 2000;
    while (run.proxy.openConnections > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    const open = run.proxy.openConnections;
    if (open > 0) {
      this.t.fail(`${run.name}'s stop() resolved, but ${open} connection${open === 1 ? "" : "s"} of its Kafka client to the broker ${open === 1 ? "was" : "were"} still open 2 s later: stop() must disconnect the consumer (await consumer.disconnect()), or it stays in the group and keeps its partitions.`);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Waiting

  /** Fails the check at once when the learner's code broke: a bad call, the wrong group, a lock, a process that ended. */
  private raise(run: Run): void {
    if (run.proxy.errors.length) throw new LabError(`grader bug: the proxy's handler failed: ${errorText(run.proxy.errors[0])}`);
    if (run.fatal) this.t.fail(run.fatal);
    if (this.wrongGroup) this.t.fail(this.wrongGroup);
    const pending = run.pending;
    if (pending && !run.killedByGrader && !run.ended && performance.now() - pending.at > STALL_MS && run.writeLockHeld()) {
      this.t.fail(this.busyText(pending, "deps.db was waiting for it"));
    }
    if (run.ended && !run.killedByGrader) {
      const tail = run.host.tail(5);
      this.t.fail(`Your consumer's process (${run.name}) ended by itself (${endText(run.ended)}) while it should have kept consuming.${tail ? ` Its last output:\n${tail}` : ""}`);
    }
  }

  busyText(call: EffectCall, how: string): string {
    const what = call.rec ? `the message at ${describeRec(call.rec)}` : `partition/offset ${call.id}`;
    return `SQLITE_BUSY from your own connection while applyEffect waited for the write lock: when applyEffect was called for ${what}, another connection to the database held its write lock (${how}), so the effect's write through deps.db could only wait, then fail. Use deps.db for your own tables too, and call applyEffect inside the transaction you open on it.`;
  }

  /** Polls (every few ms) until `done()` holds, the grader killed the run, or time runs out. */
  async until(run: Run, done: () => boolean | Promise<boolean>, timeoutMs: number): Promise<UntilResult> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      this.raise(run);
      if (run.killedByGrader) return "killed";
      if (await done()) return "done";
      if (Date.now() > until) return "timeout";
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Until the run's consumer fetched at the end of every partition: it has processed everything it was given. */
  settle(run: Run, timeoutMs: number): Promise<UntilResult> {
    // Everything applied, or nothing changing any more: a consumer may write its effects a
    // moment after eachMessage returned (buffered), so its first fetch at the end is not yet
    // the end of its work.
    let seen = "";
    let since = 0;
    return this.until(
      run,
      () => {
        if (run.fetchesAtEnd === 0) return false;
        if (this.allApplied(run)) return true;
        const now = `${this.applied(run).size}/${run.commits}/${run.effects.length}`;
        if (now !== seen) [seen, since] = [now, performance.now()];
        return performance.now() - since > QUIET_MS;
      },
      timeoutMs,
    );
  }

  /** Fails when a run did not catch up in time, saying what was seen of it. */
  failStuck(run: Run, what: string, ms: number): never {
    const problem = this.verdict(run, `${ms / 1000} s after ${what}`);
    this.t.fail(`${problem ?? `${ms / 1000} s after ${what}, your consumer had not fetched to the end of every partition.`} ${this.stuck(run)}`.trim());
  }

  /** What a run that timed out was doing, from the wire and the callbacks. */
  stuck(run: Run): string {
    const escaped = run.host.escaped[0];
    const crash = escaped === undefined ? "" : ` An error escaped your code: ${errorText(escaped)}.`;
    if (run.proxy.accepted === 0) return `Your consumer never connected to Kafka through deps.kafka.${crash}`;
    if (run.joinedGroups.size === 0) return `Your consumer never sent a JoinGroup: was consumer.run() called?${crash}`;
    if (!run.joinedGroups.has(this.groupId)) return `Your consumer joined the group "${[...run.joinedGroups][0]}", not deps.groupId ("${this.groupId}").${crash}`;
    if (run.fetches === 0) return `Your consumer joined its group but never fetched from the topic.${crash}`;
    if (run.effects.length === 0) return `Your consumer fetched, but never called applyEffect.${crash}`;
    return crash.trim();
  }

  // ---------------------------------------------------------------------------------------------
  // Observations and verdicts

  private applied(run: Run): Set<string> {
    const rows = run.reader.prepare("SELECT partition, offset FROM ledger").all() as { partition: number; offset: number }[];
    return new Set(rows.map((r) => id(r.partition, r.offset)));
  }

  isApplied(run: Run, rec: Rec): boolean {
    return run.reader.prepare("SELECT 1 FROM ledger WHERE partition = ? AND offset = ?").get(rec.partition, rec.offset) !== undefined;
  }

  allApplied(run: Run): boolean {
    const applied = this.applied(run);
    return this.expected.every((r) => applied.has(id(r.partition, r.offset)));
  }

  /** The group's committed offset per partition (-1 when none), through the grader's admin client. */
  async committed(): Promise<Map<number, number>> {
    const [res] = await this.admin.fetchOffsets({ groupId: this.groupId, topics: [this.topic] });
    return new Map((res?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
  }

  async committedAtEnd(): Promise<boolean> {
    const c = await this.committed();
    return [...this.ends].every(([p, end]) => c.get(p) === end);
  }

  /** Does a commit for the check's group and topic carry an offset past `rec` on its partition? */
  covers(entries: CommitEntry[], rec: Rec): boolean {
    return entries.some((e) => e.topic === this.topic && e.partition === rec.partition && Number(e.offset) > rec.offset);
  }

  /**
   * Judges one offset commit the learner's consumer was about to send, while the proxy holds it:
   * every record it covers (below the committed offset) must already be applied in the database.
   */
  inspectCommit(run: Run, groupId: string, entries: CommitEntry[]): void {
    if (groupId !== this.groupId) {
      this.wrongGroup ??= `Your consumer committed offsets for the group "${groupId}", but the group to use is "${this.groupId}" (deps.groupId): a restarted process would not find them.`;
      return;
    }
    if (!entries.some((e) => e.topic === this.topic)) return;
    run.commits++;
    for (const e of entries) {
      if (e.topic === this.topic) run.committedOnWire.set(e.partition, Math.max(run.committedOnWire.get(e.partition) ?? -1, Number(e.offset)));
    }
    if (this.violations.length) return;
    const applied = this.applied(run);
    for (const e of entries) {
      if (e.topic !== this.topic) continue;
      const upTo = Number(e.offset);
      const missing = this.expected.filter((r) => r.partition === e.partition && r.offset < upTo && !applied.has(id(r.partition, r.offset))).sort((a, b) => a.offset - b.offset);
      const first = missing[0];
      if (first) {
        const calls = run.effects.filter((c) => c.id === id(first.partition, first.offset));
        const threw = calls.some((c) => c.written)
          ? " (applyEffect had written its row, but the transaction holding it had not committed)"
          : calls.length
            ? " (applyEffect had been called for it, and had thrown)"
            : first.kind === "committed" && this.openTransactions > 0
              ? " (it belongs to a transaction its producer had not committed yet, so a read_committed consumer had not even been given it: commit the offset after the last record you processed, message.offset + 1, never a batch's highWatermark or the partition's end)"
              : "";
        this.violations.push({
          rec: first,
          text: `An offset commit for partition ${e.partition} up to offset ${upTo} was on its way to the broker while the message at ${describeRec(first)} had not been applied${threw}: its effect was not in the database. A crash at that moment loses the message: the restart resumes after it. Commit an offset only after the SQLite transaction with the effects it covers has committed.`,
        });
        return;
      }
    }
  }

  /** Verdict on the ledger of `run` (the last process): an early commit first, then the ledger's first problem. */
  verdict(run: Run, context: string, crash?: { victim: Rec; lossHint: string }): string | null {
    if (this.wrongGroup) return this.wrongGroup;
    const applied = this.applied(run);
    const early = this.violations.find((v) => applied.has(id(v.rec.partition, v.rec.offset)));
    if (early) return early.text;
    return this.judgeLedger(run, context, crash);
  }

  /**
   * The ledger must hold every plain and committed record exactly once, nothing of an aborted
   * transaction, no row of an effect that failed, and each row must be the record it claims.
   */
  judgeLedger(run: Run, context: string, crash?: { victim: Rec; lossHint: string }): string | null {
    const rows = run.reader.prepare("SELECT seq, run, attempt, topic, partition, offset, key, value FROM ledger ORDER BY seq").all() as LedgerRow[];
    const history = new History();
    for (const r of this.expected) history.record("produced", id(r.partition, r.offset));
    const firstRun = new Map<string, LedgerRow>();
    for (const row of rows) {
      const rec = this.byId.get(id(row.partition, row.offset));
      if (row.topic !== this.topic || !rec) {
        return `${context}, the ledger has an effect for ${row.topic === this.topic ? "" : `topic "${row.topic}", `}partition ${row.partition}, offset ${row.offset}, where there is no message of this check. Pass applyEffect the record exactly as kafkajs delivered it.`;
      }
      if (rec.kind === "aborted") {
        const how = this.runs.some((r) => r.readUncommitted) ? " Your consumer's fetches asked for read_uncommitted isolation." : "";
        return `${context}, the message at ${describeRec(rec)} was applied, but it belongs to a transaction its producer ABORTED. It was never meant to happen: consume with read_committed isolation (kafkajs: readUncommitted false, the default), which never delivers aborted records.${how}`;
      }
      if (row.key !== rec.key || row.value !== rec.value) {
        return `${context}, the ledger row for partition ${rec.partition}, offset ${rec.offset} carries key ${JSON.stringify(row.key)} and value ${JSON.stringify(row.value)}, but the message there has key "${rec.key}" and value "${rec.value}". Pass applyEffect the record exactly as kafkajs delivered it.`;
      }
      const key = id(row.partition, row.offset);
      if (this.failedWrites.has(`${key}#${row.attempt}`)) {
        return `${context}, the ledger holds the row of applyEffect call #${row.attempt} for the message at ${describeRec(rec)}, a call that threw after writing it (the grader's fault: the effect failed). Your code committed it anyway. When applyEffect throws, let the error out of your transaction, so that it rolls back (the 'processed' row with it).`;
      }
      history.record("applied", key);
      const first = firstRun.get(key);
      if (first) {
        const how = first.run === row.run ? `twice by ${runName(row.run)}` : `once by ${runName(first.run)} and again by ${runName(row.run)}`;
        return `${context}, the message at ${describeRec(rec)} was applied ${how}. Record each processed record (topic, partition, offset) in the same SQLite transaction as its effect, and skip records already recorded.`;
      }
      firstRun.set(key, row);
    }
    if (history.noDuplicateEffect()) throw new LabError("grader bug: a duplicate the ledger scan missed");
    if (history.noLoss()) {
      const missing = this.expected.filter((r) => !firstRun.has(id(r.partition, r.offset)));
      // The crash's victim first: its loss has a cause of its own.
      const victimLost = crash !== undefined && missing.includes(crash.victim);
      const shown = victimLost ? crash.victim : missing[0]!;
      const more = missing.length > 1 ? ` (and ${missing.length - 1} more of the ${this.expected.length} messages)` : "";
      return `${context}, the message at ${describeRec(shown)} was never applied${more}. ${victimLost ? crash.lossHint : this.lossWhy(rows.length)}`;
    }
    return null;
  }

  /** Why messages are missing, from what the wire showed. */
  private lossWhy(rows: number): string {
    const first = this.runs[0]?.firstFetch;
    if (rows === 0 && first && this.atEnd(first.partitions.filter((p) => p.topic === this.topic))) {
      return "Your consumer's first fetch already asked for the end of every partition: a new group starts at the end of the log unless you subscribe with fromBeginning: true.";
    }
    if (rows === 0 && this.runs.every((r) => r.effects.length === 0)) return "applyEffect was never called: call deps.applyEffect for each record.";
    return "Keys and values repeat between messages, and offsets repeat between partitions: only (topic, partition, offset) identifies a record.";
  }

  // ---------------------------------------------------------------------------------------------
  // Crash points

  /** Kills `run` in applyEffect's before() for the first call with `victim`: its write never happens. */
  killBeforeEffect(run: Run, victim: Rec): void {
    run.onBefore = (call) => {
      if (call.rec !== victim || run.killedByGrader) return;
      run.kill();
      throw new Error("killed by the grader");
    };
  }

  /** Kills `run` when an offset commit covering `victim` reaches the proxy: it never reaches the broker. */
  killAtCommit(run: Run, victim: Rec): { killedBy: string | null } {
    const note = { killedBy: null as string | null };
    run.gate = (req) => {
      const commit = decodeOffsetCommit(req) ?? decodeTxnOffsetCommit(req);
      if (!commit || commit.groupId !== this.groupId || !this.covers(commit.entries, victim)) return;
      note.killedBy = commit.entries.filter((e) => e.topic === this.topic).map((e) => `partition ${e.partition} → ${e.offset}`).join(", ");
      run.kill();
      return "drop";
    };
    return note;
  }

  /**
   * The crash right after the transaction that makes `victim`'s effect durable. From the moment
   * its row is written (after()), every durable request of the process (offset commits, produce,
   * transaction calls) is held at the proxy and dropped at the kill: nothing reaches the broker
   * after the effect. The process runs on until its WAL shows a commit with the victim's row (or
   * a deadline passes), then dies; the restart gets the database cut right after that commit:
   * whatever the learner wrote after it (a 'processed' row in a transaction of its own) is lost,
   * as it would be in a crash at that instant.
   */
  killAfterEffectCommit(run: Run, victim: Rec, deadlineMs = 3000): { walBytes: () => number | undefined; armed: () => boolean } {
    let armedAt: number | null = null;
    let walBefore = 0;
    let timer: NodeJS.Timeout | undefined;
    const maybeKill = () => {
      if (run.killedByGrader || armedAt === null) return;
      if (this.isApplied(run, victim) || performance.now() - armedAt > deadlineMs) {
        clearInterval(timer);
        run.kill();
      }
    };
    run.onAfter = (call) => {
      if (call.rec !== victim || armedAt !== null) return;
      armedAt = performance.now();
      run.gate = (req) => {
        if (!DURABLE_APIS.has(req.apiKey)) return;
        maybeKill();
        return run.hold();
      };
      timer = setInterval(maybeKill, 5);
      this.t.defer(() => clearInterval(timer));
    };
    run.onBefore = (call) => {
      maybeKill();
      if (run.killedByGrader) throw new Error("killed by the grader");
      // The commit that holds the row comes after this point in the WAL (an effect outside any
      // transaction commits before after() is even called).
      if (call.rec === victim && armedAt === null) walBefore = run.pin.walSize();
    };
    return {
      armed: () => armedAt !== null,
      walBytes: () => {
        // The first commit after the row's write began that holds it: the crash comes right after it.
        const end = firstCommitWhere(join(run.dir, DB_FILE), {
          after: walBefore,
          scratchDir: this.t.tmpDir,
          holds: (db) => db.prepare("SELECT 1 FROM ledger WHERE partition = ? AND offset = ?").get(victim.partition, victim.offset) !== undefined,
        });
        // Undefined: never committed before the kill, and the image is everything on disk.
        return end;
      },
    };
  }

  /**
   * Makes applyEffect fail for `victim`: calls 1 to `failures` throw, one of them (chosen by the
   * seed) after its row is written, inside the learner's transaction, the others before writing.
   */
  failEffect(run: Run, victim: Rec, failures: number): void {
    const afterWrite = this.t.rng.int(1, failures);
    const refuse = (call: EffectCall) => new LedgerRefusedError(`the ledger refused the deposit at ${call.id} (attempt ${call.attempt}; a fault the grader injected)`);
    run.onBefore = (call) => {
      if (call.rec === victim && call.attempt <= failures && call.attempt !== afterWrite) throw refuse(call);
    };
    run.onAfter = (call) => {
      if (call.rec !== victim || call.attempt !== afterWrite) return;
      this.failedWrites.add(`${call.id}#${call.attempt}`);
      throw refuse(call);
    };
  }
}
