// The grader-owned process the learner's consumer runs in. It builds the dependencies the
// learner gets, and through them learns what the consumer does:
//   - the kafkajs client's sockets are wrapped: every OffsetCommit request is held at a
//     checkpoint before it reaches the broker (the grader compares it with the ledger, and may
//     SIGKILL the process right there, so the commit never arrives);
//   - applyEffect writes the ledger row, and can crash the process right before that write;
//   - the SQLite handle is wrapped: the process can crash at the first statement run after a
//     given record's effect (between the effect and whatever the learner writes next).
// Crashes planned in the input are a synchronous self-SIGKILL: SQLite calls are synchronous,
// so there is no event loop turn in which to ask the grader.
import { writeFileSync } from "node:fs";
import net from "node:net";
import Database from "better-sqlite3";
import type BetterSqlite3 from "better-sqlite3";
import { Kafka, logLevel, type ConsumerConfig, type ConsumerRunConfig, type ISocketFactory } from "kafkajs";
import { runWorker, type WorkerContext } from "../../../src/kit/worker.ts";
import type { ConsumedRecord, ConsumerDeps, RunningConsumer, StartConsumer } from "../../../src/contracts/exactly-once-consumer.ts";

type Submission = { startConsumer: StartConsumer };

/** Where the worker crashes itself, for the record at `partition`/`offset`. */
export interface CrashPlan {
  /** "before-effect": in applyEffect, before the ledger row is written. "after-effect": at the first database statement after applyEffect returned. */
  point: "before-effect" | "after-effect";
  partition: number;
  offset: string;
  /** Written (synchronously) right before the SIGKILL, so the grader knows where it landed. */
  markerFile: string;
}

export interface WorkerInput {
  brokers: string[];
  topic: string;
  groupId: string;
  dbPath: string;
  /** 1 for the first process, 2 for the restart: stored with each ledger row. */
  run: number;
  crash: CrashPlan | null;
  /** Wait at the "begin" checkpoint before starting the consumer (a restart spawned ahead of time). */
  held: boolean;
}

/** One partition's offset in an OffsetCommit request, as it was about to reach the broker. */
export interface CommitEntry {
  topic: string;
  partition: number;
  offset: string;
}

export interface OffsetCommitSeen {
  version: number;
  groupId: string;
  entries: CommitEntry[];
}

const OFFSET_COMMIT = 8;

/** Decodes an OffsetCommit request (versions 0 to 5, all kafkajs sends), or null for any other request. */
export function parseOffsetCommit(buf: Buffer): OffsetCommitSeen | null {
  if (buf.length < 14 || buf.readInt16BE(4) !== OFFSET_COMMIT) return null;
  const version = buf.readInt16BE(6);
  let pos = 12; // size, api key, api version, correlation id
  const str = (): string | null => {
    const n = buf.readInt16BE(pos);
    pos += 2;
    if (n < 0) return null;
    const s = buf.toString("utf8", pos, pos + n);
    pos += n;
    return s;
  };
  str(); // client id
  const groupId = str() ?? "";
  if (version > 5) return { version, groupId, entries: [] };
  if (version >= 1) {
    pos += 4; // generation id
    str(); // member id
  }
  if (version >= 2 && version <= 4) pos += 8; // retention time
  const entries: CommitEntry[] = [];
  const topics = buf.readInt32BE(pos);
  pos += 4;
  for (let i = 0; i < topics; i++) {
    const topic = str() ?? "";
    const partitions = buf.readInt32BE(pos);
    pos += 4;
    for (let j = 0; j < partitions; j++) {
      const partition = buf.readInt32BE(pos);
      const offset = buf.readBigInt64BE(pos + 4).toString();
      pos += 12;
      if (version === 1) pos += 8; // timestamp
      str(); // metadata
      entries.push({ topic, partition, offset });
    }
  }
  return { version, groupId, entries };
}

function crashNow(markerFile: string, what: string): never {
  writeFileSync(markerFile, what);
  process.kill(process.pid, "SIGKILL");
  // SIGKILL to oneself is delivered before kill() returns; this only makes sure nothing runs on.
  for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
}

/**
 * A socket factory whose sockets hold each OffsetCommit request at a checkpoint (and every
 * write queued behind it, to keep the order), then send it once the grader says go.
 */
function inspectingSockets(w: WorkerContext<Submission, WorkerInput>): ISocketFactory {
  return ({ host, port, onConnect }) => {
    const socket = net.connect({ host, port }, onConnect);
    socket.setKeepAlive(true, 60_000);
    const write = socket.write.bind(socket) as (chunk: Buffer, encoding?: BufferEncoding) => boolean;
    let queued = 0;
    let chain: Promise<void> = Promise.resolve();
    (socket as { write: unknown }).write = (chunk: Buffer, encoding?: BufferEncoding) => {
      const commit = Buffer.isBuffer(chunk) ? parseOffsetCommit(chunk) : null;
      if (!commit && queued === 0) return write(chunk, encoding);
      queued++;
      chain = chain.then(async () => {
        if (commit) await w.checkpoint("offset-commit", commit);
        queued--;
        write(chunk, encoding);
      });
      return true;
    };
    return socket;
  };
}

/**
 * The SQLite handle the learner gets: the real connection, with every statement execution
 * passing `beforeStatement` first. Transactions opened with db.transaction() commit natively.
 */
function watchedDb(db: BetterSqlite3.Database, beforeStatement: () => void): BetterSqlite3.Database {
  const wrapStatement = (stmt: BetterSqlite3.Statement): BetterSqlite3.Statement => {
    const proxy: BetterSqlite3.Statement = new Proxy(stmt, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target) as unknown;
        if (typeof value !== "function") return value;
        const fn = value as (...args: unknown[]) => unknown;
        if (prop === "run" || prop === "get" || prop === "all" || prop === "iterate") {
          return (...args: unknown[]) => {
            beforeStatement();
            return fn.apply(target, args);
          };
        }
        return (...args: unknown[]) => {
          const out = fn.apply(target, args);
          return out === target ? proxy : out;
        };
      },
    });
    return proxy;
  };
  const proxy: BetterSqlite3.Database = new Proxy(db, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== "function") return value;
      const fn = value as (...args: unknown[]) => unknown;
      if (prop === "prepare") return (...args: unknown[]) => wrapStatement(fn.apply(target, args) as BetterSqlite3.Statement);
      if (prop === "exec" || prop === "pragma") {
        return (...args: unknown[]) => {
          beforeStatement();
          const out = fn.apply(target, args);
          return out === target ? proxy : out;
        };
      }
      return (...args: unknown[]) => {
        const out = fn.apply(target, args);
        return out === target ? proxy : out;
      };
    },
  });
  return proxy;
}

function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name === "Error" ? "" : e.name + ": "}${e.message}`;
  return String(e);
}

await runWorker<Submission, WorkerInput>(async (w) => {
  const input = w.input;
  const raw = new Database(input.dbPath);
  raw.pragma("busy_timeout = 5000");
  const insertLedger = raw.prepare("INSERT INTO ledger (run, topic, partition, offset, key, value) VALUES (?, ?, ?, ?, ?, ?)");

  const crash = input.crash;
  let armed = false; // "after-effect": the planned record's effect has returned
  const beforeStatement = (): void => {
    if (armed && crash) crashNow(crash.markerFile, "after-effect");
  };

  const applyEffect = (record: ConsumedRecord): void => {
    const message = record?.message;
    if (!record || typeof record.topic !== "string" || typeof record.partition !== "number" || !message || typeof message.offset !== "string") {
      const text = "applyEffect() needs the consumed record: { topic, partition, message } as kafkajs hands them to eachMessage.";
      w.report("effect-error", text);
      throw new TypeError(text);
    }
    beforeStatement();
    const planned = crash !== null && record.partition === crash.partition && message.offset === crash.offset;
    if (planned && crash.point === "before-effect") crashNow(crash.markerFile, "before-effect");
    insertLedger.run(input.run, record.topic, record.partition, Number(message.offset), message.key?.toString() ?? null, message.value?.toString() ?? null);
    if (planned && crash.point === "after-effect") armed = true;
  };

  const kafka = new Kafka({
    clientId: "msglab-exactly-once-consumer",
    brokers: input.brokers,
    logLevel: logLevel.ERROR,
    connectionTimeout: 3000,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 1000 },
    socketFactory: inspectingSockets(w),
  });
  // Observe the consumers the learner builds: their config, run() options and group events.
  const makeConsumer = kafka.consumer.bind(kafka);
  kafka.consumer = (config: ConsumerConfig) => {
    w.report("consumer", { groupId: config?.groupId ?? null, readUncommitted: config?.readUncommitted === true });
    // A short fetch wait unless the learner chose one: kafkajs's stop() waits for the fetch in
    // flight, 5 s by default.
    const consumer = makeConsumer({ maxWaitTimeInMs: 200, ...config });
    const run = consumer.run.bind(consumer);
    consumer.run = (runConfig?: ConsumerRunConfig) => {
      w.report("run", {
        autoCommit: runConfig?.autoCommit !== false,
        eachMessage: typeof runConfig?.eachMessage === "function",
        eachBatch: typeof runConfig?.eachBatch === "function",
      });
      // Tell the grader how far the consumer got: a record counts once its callback returned.
      const wrapped: ConsumerRunConfig = { ...runConfig };
      const eachMessage = runConfig?.eachMessage;
      const eachBatch = runConfig?.eachBatch;
      if (eachMessage) {
        wrapped.eachMessage = async (payload) => {
          await eachMessage(payload);
          w.report("processed", { partition: payload.partition, offset: payload.message.offset });
        };
      }
      if (eachBatch) {
        wrapped.eachBatch = async (payload) => {
          await eachBatch(payload);
          const last = payload.batch.messages[payload.batch.messages.length - 1];
          if (last) w.report("processed", { partition: payload.batch.partition, offset: last.offset });
        };
      }
      return run(wrapped);
    };
    consumer.on(consumer.events.GROUP_JOIN, (e) => w.report("group-join", { memberId: e.payload.memberId }));
    // kafkajs fetches again only once every batch of the previous fetch was processed: fetches
    // with no batch processing in between mean the consumer has nothing left to read.
    let fetchesSinceWork = 0;
    let idle = false;
    consumer.on(consumer.events.START_BATCH_PROCESS, () => {
      fetchesSinceWork = 0;
      if (idle) w.report("busy");
      idle = false;
    });
    consumer.on(consumer.events.FETCH, () => {
      if (++fetchesSinceWork >= 5 && !idle) {
        idle = true;
        w.report("idle");
      }
    });
    consumer.on(consumer.events.CRASH, (e) => w.report("consumer-crash", { error: errorText(e.payload.error), restart: e.payload.restart }));
    return consumer;
  };

  const deps: ConsumerDeps = { kafka, topic: input.topic, groupId: input.groupId, db: watchedDb(raw, beforeStatement), applyEffect };
  if (input.held) await w.checkpoint("begin");
  let running: RunningConsumer;
  try {
    running = await w.submission.startConsumer(deps);
  } catch (e) {
    // Stay alive until the grader has read the report: an exit could overtake it.
    w.report("start-failed", errorText(e));
    await w.stopped;
    return;
  }
  if (!running || typeof running.stop !== "function") {
    w.report("start-failed", `startConsumer() resolved to ${typeof running === "object" ? JSON.stringify(running) : String(running)}; it must resolve to an object with stop().`);
    await w.stopped;
    return;
  }
  w.report("started");
  await w.stopped;
  try {
    await running.stop();
    w.report("stopped");
  } catch (e) {
    w.report("stop-failed", errorText(e));
  }
});
