// The grader's side of the exactly-once-consumer exercise: it writes the stream, owns the
// ledger, runs the learner's consumer in worker processes, and judges from outside (the ledger
// on its own SQLite connection, the group's committed offsets through its own admin client).
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import type BetterSqlite3 from "better-sqlite3";
import type { Admin, Kafka, Producer } from "kafkajs";
import { History, LabError } from "../../../src/kit/index.ts";
import type { CheckContext, Worker, WorkerEvent } from "../../../src/kit/index.ts";
import type { StartConsumer } from "../../../src/contracts/exactly-once-consumer.ts";
import type { CrashPlan, OffsetCommitSeen, WorkerInput } from "./worker.ts";

export type Submission = { startConsumer: StartConsumer };
export type T = CheckContext<Submission>;

const WORKER = join(dirname(fileURLToPath(import.meta.url)), "worker.ts");

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
  topic: string;
  partition: number;
  offset: number;
  key: string | null;
  value: string | null;
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

/** What one worker process did, as far as the grader could see it. */
export class Run {
  worker!: Worker;
  startFailed: string | null = null;
  effectError: string | null = null;
  lastCrash: string | null = null;
  consumerConfig: { groupId: string | null; readUncommitted: boolean } | null = null;
  runConfig: { autoCommit: boolean; eachMessage: boolean; eachBatch: boolean } | null = null;
  joined = false;
  /** The consumer's fetches come back with nothing to process. */
  idle = false;
  commits = 0;
  /** Per partition, the highest offset whose eachMessage (or eachBatch) call returned in this process. */
  readonly processed = new Map<number, number>();
  killedAtCommit: OffsetCommitSeen | null = null;

  constructor(
    readonly number: number,
    readonly crash: CrashPlan | null,
  ) {}

  /** Where a planned self-crash landed, if it did. */
  crashedAt(): string | null {
    return this.crash && existsSync(this.crash.markerFile) ? readFileSync(this.crash.markerFile, "utf8") : null;
  }

  onReport(e: WorkerEvent): void {
    const data = e.data as Record<string, unknown> | string | null;
    if (e.name === "start-failed") this.startFailed = String(data);
    if (e.name === "effect-error") this.effectError = String(data);
    if (e.name === "consumer-crash") this.lastCrash = String((data as { error: string }).error);
    if (e.name === "consumer") this.consumerConfig = data as Run["consumerConfig"];
    if (e.name === "run") this.runConfig = data as Run["runConfig"];
    if (e.name === "group-join") this.joined = true;
    if (e.name === "idle") this.idle = true;
    if (e.name === "busy") this.idle = false;
    if (e.name === "processed") {
      const { partition, offset } = data as { partition: number; offset: string };
      this.processed.set(partition, Math.max(this.processed.get(partition) ?? -1, Number(offset)));
    }
  }

  /** Lets a process started with `held` start the learner's consumer. */
  begin(): void {
    this.worker.resume();
  }

  /** Asks the learner's stop() to run; the harness kills the process if it lingers. */
  async stop(): Promise<void> {
    await this.worker.stop(5000);
  }
}

/** A planned crash's victim, and what its loss would mean. */
export interface CrashNote {
  victim: Rec;
  lossHint: string;
}

export type UntilResult = "done" | "crashed" | "timeout";

/**
 * One check's world: a topic, a consumer group, a SQLite file with the grader's `ledger`,
 * and the records the grader wrote.
 */
export class Lab {
  readonly records: Rec[] = [];
  /** Offset commits that covered a record whose effect was not in the database yet. */
  readonly violations: { rec: Rec; text: string }[] = [];
  /** Offsets committed for another group than the one given. */
  private wrongGroup: string | null = null;
  private readonly byId = new Map<string, Rec>();
  private ends = new Map<number, number>();
  private producer: Producer | undefined;
  private txProducer: Producer | undefined;
  private admin!: Admin;
  private db!: BetterSqlite3.Database;
  private readonly dbPath: string;

  private constructor(
    private readonly t: T,
    readonly topic: string,
    readonly groupId: string,
    readonly partitions: number,
  ) {
    this.dbPath = join(t.tmpDir, "service.db");
  }

  static async create(t: T, partitions = 2): Promise<Lab> {
    const lab = new Lab(t, t.names.topic("deposits"), t.names.group("ledger-service"), partitions);
    await t.kafka.createTopics([lab.topic], partitions);
    lab.admin = await t.kafka.admin();
    lab.db = new Database(lab.dbPath);
    t.defer(() => lab.db.close());
    lab.db.pragma("journal_mode = WAL");
    lab.db.pragma("busy_timeout = 5000");
    // No unique constraint on purpose: a duplicate effect shows as a second row.
    lab.db.exec(`CREATE TABLE ledger (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      run INTEGER NOT NULL,
      topic TEXT NOT NULL,
      partition INTEGER NOT NULL,
      offset INTEGER NOT NULL,
      key TEXT,
      value TEXT
    )`);
    return lab;
  }

  private add(spec: Spec, offset: number, kind: RecordKind): void {
    const rec: Rec = { ...spec, offset, kind };
    this.records.push(rec);
    this.byId.set(id(rec.partition, offset), rec);
    this.ends.set(rec.partition, Math.max(this.ends.get(rec.partition) ?? 0, offset + 1));
  }

  /** Writes plain (non-transactional) messages, one send per partition, in order. */
  async writePlain(specs: Spec[]): Promise<void> {
    this.producer ??= await this.t.kafka.producer();
    for (let p = 0; p < this.partitions; p++) {
      const mine = specs.filter((s) => s.partition === p);
      if (mine.length === 0) continue;
      const [meta] = await this.producer.send({ topic: this.topic, acks: -1, messages: mine.map((s) => ({ partition: p, key: s.key, value: s.value })) });
      const base = Number(meta!.baseOffset);
      mine.forEach((s, i) => this.add(s, base + i, "plain"));
    }
  }

  /** Writes messages inside one transaction, then commits or aborts it. */
  async writeTransaction(specs: Spec[], outcome: "commit" | "abort"): Promise<void> {
    if (!this.txProducer) {
      const kafka: Kafka = await this.t.kafka.client({ retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 1000 } });
      this.txProducer = kafka.producer({ transactionalId: this.t.names.transactionalId("writer"), idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
      await this.txProducer.connect();
      const producer = this.txProducer;
      this.t.defer(() => producer.disconnect());
    }
    const tx = await this.txProducer.transaction();
    try {
      for (let p = 0; p < this.partitions; p++) {
        const mine = specs.filter((s) => s.partition === p);
        if (mine.length === 0) continue;
        const [meta] = await tx.send({ topic: this.topic, messages: mine.map((s) => ({ partition: p, key: s.key, value: s.value })) });
        const base = Number(meta!.baseOffset);
        mine.forEach((s, i) => this.add(s, base + i, outcome === "commit" ? "committed" : "aborted"));
      }
    } catch (e) {
      await tx.abort().catch(() => {});
      throw e;
    }
    if (outcome === "commit") await tx.commit();
    else await tx.abort();
  }

  /**
   * Waits until the last stable offset of every partition has passed every transactional record:
   * the commit and abort markers are in the log (they land a moment after commit()/abort()).
   */
  async waitForMarkers(): Promise<void> {
    const until = Date.now() + 10_000;
    for (;;) {
      const lso = new Map((await this.admin.fetchTopicOffsets(this.topic)).map((p) => [p.partition, Number(p.offset)]));
      const open = this.records.filter((r) => r.kind !== "plain" && (lso.get(r.partition) ?? 0) <= r.offset);
      if (open.length === 0) return;
      if (Date.now() > until) throw new LabError("Kafka: the grader's own transactions did not end within 10 s.");
      await new Promise((r) => setTimeout(r, 25));
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

  /** A record to crash at: one with at least two more records after it on its partition. */
  pickVictim(): Rec {
    const candidates = this.expected.filter((r) => this.expected.some((o) => o.partition === r.partition && o.offset > r.offset + 1));
    return this.t.rng.pick(candidates);
  }

  ledger(): LedgerRow[] {
    return this.db.prepare("SELECT seq, run, topic, partition, offset, key, value FROM ledger ORDER BY seq").all() as LedgerRow[];
  }

  private appliedIds(): Set<string> {
    const rows = this.db.prepare("SELECT partition, offset FROM ledger").all() as { partition: number; offset: number }[];
    return new Set(rows.map((r) => id(r.partition, r.offset)));
  }

  allApplied(): boolean {
    const applied = this.appliedIds();
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

  get endOffsets(): Map<number, number> {
    return this.ends;
  }

  /**
   * Judges one OffsetCommit request the learner's consumer was about to send: every record it
   * covers (below the committed offset) must already be applied in the database.
   */
  inspectCommit(commit: OffsetCommitSeen): void {
    if (commit.groupId !== this.groupId) {
      this.wrongGroup ??= `Your consumer committed offsets for the group "${commit.groupId}", but the group to use is "${this.groupId}" (deps.groupId): a restarted process would not find them.`;
      return;
    }
    if (this.violations.length) return;
    const applied = this.appliedIds();
    for (const e of commit.entries) {
      if (e.topic !== this.topic) continue;
      const upTo = Number(e.offset);
      const missing = this.expected.filter((r) => r.partition === e.partition && r.offset < upTo && !applied.has(id(r.partition, r.offset))).sort((a, b) => a.offset - b.offset);
      if (missing.length) {
        this.violations.push({
          rec: missing[0]!,
          text: `An offset commit for partition ${e.partition} up to offset ${upTo} was on its way to the broker while the message at ${describeRec(missing[0]!)} had not been applied yet (its effect was not in the database; it was applied only later). A crash at that moment loses the message: the restart resumes after it. Commit the offset only after the SQLite transaction with the effect has committed.`,
        });
        return;
      }
    }
  }

  /**
   * Starts the learner's consumer in a fresh worker process. `killAtCommit` SIGKILLs it at the
   * first offset commit that covers that record, before the commit reaches the broker.
   */
  async start(number: number, opts: { crash?: Omit<CrashPlan, "markerFile"> | undefined; killAtCommit?: Rec | undefined; held?: boolean } = {}): Promise<Run> {
    const crash: CrashPlan | null = opts.crash ? { ...opts.crash, markerFile: join(this.t.tmpDir, `crash-${number}.txt`) } : null;
    const run = new Run(number, crash);
    const input: WorkerInput = { brokers: this.t.kafka.brokers, topic: this.topic, groupId: this.groupId, dbPath: this.dbPath, run: number, crash, held: opts.held === true };
    const victim = opts.killAtCommit;
    run.worker = await this.t.workers.start(WORKER, {
      input,
      onReport: (e) => run.onReport(e),
      onCheckpoint: (e) => {
        if (e.name === "begin") return "hold";
        if (e.name !== "offset-commit") return "continue";
        const commit = e.data as OffsetCommitSeen;
        run.commits++;
        this.inspectCommit(commit);
        if (victim && !run.killedAtCommit && commit.entries.some((x) => x.topic === this.topic && x.partition === victim.partition && Number(x.offset) > victim.offset)) {
          run.killedAtCommit = commit;
          return "kill";
        }
        return "continue";
      },
    });
    return run;
  }

  /**
   * Polls until `done()` holds, the worker dies, or time runs out. Fails the check at once when
   * the learner's code broke (start failed, bad applyEffect call, offsets committed for another
   * group, the process ended by itself).
   */
  async until(run: Run, done: () => boolean | Promise<boolean>, timeoutMs: number): Promise<UntilResult> {
    let exited = false;
    void run.worker.exited.then(() => (exited = true));
    const until = Date.now() + timeoutMs;
    for (;;) {
      if (run.startFailed) this.t.fail(`startConsumer() failed in ${runName(run.number)}: ${run.startFailed}`);
      if (run.effectError) this.t.fail(run.effectError);
      if (this.wrongGroup) this.t.fail(this.wrongGroup);
      if (exited) {
        if (run.worker.killed || run.crashedAt()) return "crashed";
        const how = await run.worker.exited;
        const tail = run.worker.log.trim().split("\n").slice(-5).join("\n");
        this.t.fail(`Your consumer's process (${runName(run.number)}) ended by itself (${how.signal ?? `exit code ${how.code}`}) while it should have kept consuming.${tail ? ` Its last output:\n${tail}` : ""}`);
      }
      if (await done()) return "done";
      if (Date.now() > until) return "timeout";
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /**
   * The consumer of this run has nothing left to do: on every partition, either it processed the
   * last record (its eachMessage returned), or the group's committed offset is at the end.
   */
  async caughtUp(run: Run): Promise<boolean> {
    const behind = [...this.ends].filter(([p, end]) => (run.processed.get(p) ?? -1) < end - 1);
    if (behind.length === 0) return true;
    const committed = await this.committed();
    return behind.every(([p, end]) => committed.get(p) === end);
  }

  /** Until the run caught up, or its consumer has nothing left to read. */
  async settle(run: Run, timeoutMs = 15_000): Promise<UntilResult> {
    return this.until(run, async () => run.idle || (await this.caughtUp(run)), timeoutMs);
  }

  /** What a run that timed out was doing, for the failure message. */
  stuck(run: Run): string {
    if (!run.consumerConfig) return "No consumer was ever created from deps.kafka.";
    if (!run.runConfig) return "Your consumer's run() was never called.";
    if (!run.joined) return "Your consumer never joined its group.";
    return run.lastCrash ? `Your consumer crashed with: ${run.lastCrash}` : "";
  }

  /**
   * Removes the SIGKILLed process's member from the group at once, as the broker would after
   * its session timeout: the restart then gets the partitions without waiting for it.
   */
  async evictDeadMembers(): Promise<void> {
    const { groups } = await this.admin.describeGroups([this.groupId]);
    const members = groups[0]?.members ?? [];
    if (members.length === 0) return;
    const kafka = await this.t.kafka.client();
    const create = Object.getOwnPropertySymbols(kafka).find((s) => s.description === "private:Kafka:createCluster");
    if (!create) throw new LabError("kafkajs internals changed: the grader cannot evict a dead group member.");
    type Cluster = {
      connect(): Promise<void>;
      disconnect(): Promise<void>;
      findGroupCoordinator(o: { groupId: string }): Promise<{ leaveGroup(o: { groupId: string; memberId: string }): Promise<unknown> }>;
    };
    const cluster = (kafka as unknown as Record<symbol, (o: object) => Cluster>)[create]!({});
    await cluster.connect();
    try {
      const until = Date.now() + 10_000;
      for (;;) {
        const coordinator = await cluster.findGroupCoordinator({ groupId: this.groupId });
        for (const m of members) await coordinator.leaveGroup({ groupId: this.groupId, memberId: m.memberId }).catch(() => {});
        const left = (await this.admin.describeGroups([this.groupId])).groups[0]?.members ?? [];
        if (!left.some((m) => members.some((dead) => dead.memberId === m.memberId))) return;
        if (Date.now() > until) throw new LabError("Kafka: the grader could not remove the crashed consumer from its group.");
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await cluster.disconnect().catch(() => {});
    }
  }

  /**
   * The verdict on what happened so far: an offset committed before an effect that came later,
   * then the ledger's first problem. Null when all is well.
   */
  verdict(context: string, crash?: CrashNote): string | null {
    if (this.wrongGroup) return this.wrongGroup;
    const applied = this.appliedIds();
    const early = this.violations.find((v) => applied.has(id(v.rec.partition, v.rec.offset)));
    if (early) return early.text;
    return this.judgeLedger(context, crash);
  }

  /**
   * The ledger must hold every plain and committed record exactly once, nothing of an aborted
   * transaction, and each row must be the record it claims. Returns the first problem, or null.
   */
  judgeLedger(context: string, crash?: CrashNote): string | null {
    const rows = this.ledger();
    const history = new History();
    for (const r of this.expected) history.record("produced", id(r.partition, r.offset));
    const firstRun = new Map<string, LedgerRow>();
    for (const row of rows) {
      const rec = this.byId.get(id(row.partition, row.offset));
      if (row.topic !== this.topic || !rec) {
        return `${context}, the ledger has an effect for ${row.topic === this.topic ? "" : `topic "${row.topic}", `}partition ${row.partition}, offset ${row.offset}, where there is no message of this check. Pass applyEffect the record exactly as kafkajs delivered it.`;
      }
      if (rec.kind === "aborted") {
        return `${context}, the message at ${describeRec(rec)} was applied, but it belongs to a transaction its producer ABORTED. It was never meant to happen: consume with read_committed isolation (kafkajs: readUncommitted false, the default), which never delivers aborted records.`;
      }
      if (row.key !== rec.key || row.value !== rec.value) {
        return `${context}, the ledger row for partition ${rec.partition}, offset ${rec.offset} carries key ${JSON.stringify(row.key)} and value ${JSON.stringify(row.value)}, but the message there has key "${rec.key}" and value "${rec.value}". Pass applyEffect the record exactly as kafkajs delivered it.`;
      }
      const key = id(row.partition, row.offset);
      history.record("applied", key);
      const first = firstRun.get(key);
      if (first) {
        const how =
          first.run === row.run
            ? `twice by ${runName(row.run)}`
            : `once by ${runName(first.run)} and again by ${runName(row.run)}`;
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
      const why = victimLost
        ? crash.lossHint
        : rows.length === 0
          ? "Nothing at all was applied: subscribe with fromBeginning: true (a new group otherwise starts at the end of the log), and call deps.applyEffect for each record."
          : "Keys and values repeat between messages, and offsets repeat between partitions: only (topic, partition, offset) identifies a record.";
      return `${context}, the message at ${describeRec(shown)} was never applied${more}. ${why}`;
    }
    return null;
  }
}
