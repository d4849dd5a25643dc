// Observation helpers for the transactional-producer grader: the topics of a check, end
// markers, the last stable offset, reads at either isolation level that report each record's
// batch header, and Kafka's default partitioner computed here, independently of any client.
import type { Admin, Consumer, Producer } from "kafkajs";
import { HostGone, LabError, describeValue, waitForTopicLeaders } from "../../../src/kit/index.ts";
import type { CheckContext } from "../../../src/kit/index.ts";
import { ApiKey, DURABLE_APIS, KafkaProxy, apiName, decodeEndTxn, decodeProduceHeader, type KafkaRequest } from "../../../src/kit/kafka-proxy.ts";

/** A topic the check created, with its partition count. */
export interface TopicSpec {
  name: string;
  partitions: number;
}

/** One record as the grader's own reader saw it, with the header of the batch it came in. */
export interface SeenRecord {
  topic: string;
  partition: number;
  offset: number;
  key: string | null;
  value: string;
  /** -1 when the producer was neither idempotent nor transactional. */
  producerId: string;
  producerEpoch: number;
  /** The batch's transactional flag. */
  inTransaction: boolean;
}

/** One end marker per partition: its offset, and the value that identifies this round. */
export interface Markers {
  value: string;
  offsets: Map<string, number>;
}

const MARKER_PREFIX = "msglab-end-marker:";
export const where = (topic: string, partition: number): string => `${topic}[${partition}]`;

type BatchHeader = { producerId?: string; producerEpoch?: number; inTransaction?: boolean };

// ---------------------------------------------------------------------------------------------
// Kafka's default partitioner for a keyed record (the Java client's, which kafkajs 2.x also
// uses by default): murmur2 of the key's UTF-8 bytes, made positive, modulo the partition count.
// Written out here so the grader does not ask a client library what the right answer is.

/** Kafka's `Utils.murmur2` (32-bit, seed 0x9747b28c). */
export function murmur2(data: Buffer): number {
  const m = 0x5bd1e995;
  const length = data.length;
  let h = (0x9747b28c ^ length) | 0;
  const length4 = length >>> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i * 4;
    let k = (data[i4]! & 0xff) | ((data[i4 + 1]! & 0xff) << 8) | ((data[i4 + 2]! & 0xff) << 16) | ((data[i4 + 3]! & 0xff) << 24);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m);
    h ^= k;
  }
  const tail = length & ~3;
  switch (length % 4) {
    case 3:
      h ^= (data[tail + 2]! & 0xff) << 16;
    // falls through
    case 2:
      h ^= (data[tail + 1]! & 0xff) << 8;
    // falls through
    case 1:
      h ^= data[tail]! & 0xff;
      h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}

/** The partition Kafka's default partitioner gives a record with this key. */
export function partitionFor(key: string, partitions: number): number {
  return (murmur2(Buffer.from(key, "utf8")) & 0x7fffffff) % partitions;
}

// ---------------------------------------------------------------------------------------------

/**
 * The grader's eyes on the topics of one check. It writes end markers with a plain producer
 * and reads with consumers of its own: nothing here trusts the learner's code.
 */
export class Observer {
  private producer: Producer | undefined;
  private admin: Admin | undefined;
  private round = 0;
  private readonly partitionsOf: Map<string, number>;

  constructor(
    private readonly t: CheckContext<unknown>,
    readonly topics: TopicSpec[],
  ) {
    this.partitionsOf = new Map(topics.map((x) => [x.name, x.partitions]));
  }

  /** Creates the topics (through t.names, so they are deleted after the check). */
  static async create(t: CheckContext<unknown>, specs: { base: string; partitions: number; configs?: Record<string, string> }[]): Promise<Observer> {
    const topics = specs.map((s) => ({ name: t.names.topic(s.base), partitions: s.partitions }));
    const admin = await t.kafka.admin();
    await admin.createTopics({
      // kafkajs's own waitForLeaders gives up on UNKNOWN_TOPIC_OR_PARTITION, which a KRaft
      // broker under load answers for a moment after CreateTopics returns: wait here instead.
      waitForLeaders: false,
      topics: specs.map((s, i) => ({
        topic: topics[i]!.name,
        numPartitions: s.partitions,
        replicationFactor: 1,
        configEntries: Object.entries(s.configs ?? {}).map(([name, value]) => ({ name, value })),
      })),
    });
    await waitForTopicLeaders(admin, topics);
    const observer = new Observer(t, topics);
    observer.admin = admin;
    observer.producer = await t.kafka.producer();
    return observer;
  }

  partitions(topic: string): number {
    return this.partitionsOf.get(topic) ?? 1;
  }

  /**
   * Writes one end marker to every partition and returns their offsets. Everything written
   * before a marker sits below its offset, so a reader that reaches every marker has seen all
   * that its isolation level lets it see.
   */
  async writeMarkers(): Promise<Markers> {
    const value = `${MARKER_PREFIX}${this.t.seed}:${++this.round}`;
    const offsets = new Map<string, number>();
    const results = await this.producer!.sendBatch({
      acks: -1,
      topicMessages: this.topics.map((topic) => ({
        topic: topic.name,
        messages: Array.from({ length: topic.partitions }, (_, partition) => ({ partition, value })),
      })),
    });
    for (const r of results) offsets.set(where(r.topicName, r.partition), Number(r.baseOffset));
    if (offsets.size !== this.topics.reduce((n, t) => n + t.partitions, 0)) {
      throw new LabError("Kafka: the grader could not place an end marker on every partition.");
    }
    return { value, offsets };
  }

  /**
   * The last stable offset of each partition: a read_committed consumer sees nothing at or
   * beyond it. An open transaction holds it at the transaction's first offset.
   */
  async lastStableOffsets(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    // kafkajs's admin lists offsets with isolation READ_COMMITTED: "latest" is the LSO.
    const all = await Promise.all(this.topics.map(async (topic) => ({ topic: topic.name, offsets: await this.admin!.fetchTopicOffsets(topic.name) })));
    for (const { topic, offsets } of all) for (const p of offsets) out.set(where(topic, p.partition), Number(p.offset));
    return out;
  }

  /**
   * Polls until no transaction is open below any marker (the LSO has passed every marker).
   * Returns the partitions still held back when time runs out, or [] when all are clear.
   * Commit and abort markers are written a moment after commit()/abort() return, hence the poll.
   */
  async waitStable(markers: Markers, timeoutMs: number): Promise<string[]> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const lso = await this.lastStableOffsets();
      const stuck = [...markers.offsets].filter(([p, offset]) => (lso.get(p) ?? 0) <= offset).map(([p]) => p);
      if (stuck.length === 0 || Date.now() > until) return stuck;
      await new Promise((r) => setTimeout(r, 15));
    }
  }

  /**
   * Reads every partition from the beginning up to this round's markers, as a read_committed
   * or read_uncommitted consumer, and returns the records (markers left out). For
   * read_committed, call waitStable first: an open transaction hides the markers.
   */
  async read(markers: Markers, isolation: "read_committed" | "read_uncommitted", timeoutMs = 10_000): Promise<SeenRecord[]> {
    const kafka = await this.t.kafka.client();
    const consumer: Consumer = kafka.consumer({
      groupId: this.t.names.group(`reader-${this.round}-${isolation}`),
      readUncommitted: isolation === "read_uncommitted",
      sessionTimeout: 6000,
      heartbeatInterval: 500,
      maxWaitTimeInMs: 50,
    });
    this.t.defer(() => consumer.disconnect());
    await consumer.connect();
    await consumer.subscribe({ topics: this.topics.map((t) => t.name), fromBeginning: true });
    const seen: SeenRecord[] = [];
    const pending = new Set(markers.offsets.keys());
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new LabError(`Kafka: the grader's ${isolation} reader did not reach its end markers on ${[...pending].join(", ")} within ${timeoutMs} ms.`)),
          timeoutMs,
        );
        consumer
          .run({
            autoCommit: false,
            eachMessage: async ({ topic, partition, message }) => {
              const value = message.value?.toString() ?? "";
              if (value.startsWith(MARKER_PREFIX)) {
                if (value === markers.value && pending.delete(where(topic, partition)) && pending.size === 0) {
                  clearTimeout(timer);
                  resolve();
                }
                return;
              }
              if (!pending.has(where(topic, partition))) return;
              const header = ((message as unknown as { batchContext?: BatchHeader }).batchContext ?? {}) as BatchHeader;
              seen.push({
                topic,
                partition,
                offset: Number(message.offset),
                key: message.key?.toString() ?? null,
                value,
                producerId: String(header.producerId ?? "-1"),
                producerEpoch: header.producerEpoch ?? -1,
                inTransaction: header.inTransaction === true,
              });
            },
          })
          .catch(reject);
      });
    } finally {
      await consumer.disconnect().catch(() => {});
    }
    return seen;
  }
}

// ---------------------------------------------------------------------------------------------

/** One EndTxn request (a commit or an abort) as it crossed the grader's proxy. */
export interface EndTxnSeen {
  transactionalId: string;
  committed: boolean;
  /** Set once the broker's answer has been passed on to the learner's client. */
  answered: boolean;
  /** The answer's error code (0: done), once it came. */
  errorCode?: number;
}

/**
 * The learner's Kafka wire, through a proxy the grader owns (the `kafka.client` capability's
 * `via`): every transactional id the client names (InitProducerId, Produce, EndTxn), and every
 * commit and abort, which the grader may hold before it goes on.
 */
export class TxnWire {
  readonly endTxns: EndTxnSeen[] = [];
  /** Transactional ids named on the wire, in first-seen order. */
  readonly ids = new Set<string>();
  /** Names of the requests that change what the broker keeps (Produce, AddPartitionsToTxn, EndTxn, …), in arrival order. */
  readonly durable: string[] = [];
  /** Called for each EndTxn before it is forwarded; a promise holds it until it settles. */
  onEndTxn: ((e: EndTxnSeen) => Promise<void> | void) | null = null;

  private constructor(readonly proxy: KafkaProxy) {}

  static async start(t: CheckContext<unknown>): Promise<TxnWire> {
    const proxy = await KafkaProxy.start(t.kafkaBrokers[0]!);
    t.defer(() => proxy.close());
    const wire = new TxnWire(proxy);
    proxy.handler = (req) => wire.see(req);
    return wire;
  }

  get address(): string {
    return this.proxy.address;
  }

  /** Commits (or aborts) whose answer reached the learner's client. */
  answered(committed: boolean): number {
    return this.endTxns.filter((e) => e.committed === committed && e.answered).length;
  }

  seen(committed: boolean): number {
    return this.endTxns.filter((e) => e.committed === committed).length;
  }

  /** Commits (or aborts) sent, less those the broker refused (a refused one retried counts once). */
  ended(committed: boolean): number {
    return this.endTxns.filter((e) => e.committed === committed && !(e.errorCode !== undefined && e.errorCode !== 0)).length;
  }

  private see(req: KafkaRequest): Promise<"forward"> | void {
    if (DURABLE_APIS.has(req.apiKey)) this.durable.push(apiName(req.apiKey));
    if (req.apiKey === ApiKey.InitProducerId && req.apiVersion <= 1) {
      // v0 and v1: transactional_id (nullable string) comes first; null for a plain idempotent producer.
      const n = req.frame.readInt16BE(req.bodyOffset);
      if (n >= 0) this.ids.add(req.frame.toString("utf8", req.bodyOffset + 2, req.bodyOffset + 2 + n));
      return;
    }
    const produce = decodeProduceHeader(req);
    if (produce) {
      if (produce.transactionalId !== null) this.ids.add(produce.transactionalId);
      return;
    }
    const end = decodeEndTxn(req);
    if (!end) return;
    this.ids.add(end.transactionalId);
    const rec: EndTxnSeen = { ...end, answered: false };
    this.endTxns.push(rec);
    void req.response.then((frame) => {
      rec.answered = true;
      // Size, correlation id, throttle_time_ms, then error_code (EndTxn v0 to v2 are not flexible).
      if (frame.length >= 14) rec.errorCode = frame.readInt16BE(12);
    });
    const hold = this.onEndTxn?.(rec);
    if (hold) return hold.then(() => "forward" as const);
  }
}

// ---------------------------------------------------------------------------------------------

/** A promise plus its resolve, for holding a learner's callback until the grader has looked. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/** How a learner promise ended, without throwing, so the grader can inspect it. */
export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown } | { ok: "timeout" };

/**
 * Settles a learner promise. A host that died by itself is not a rejection of the learner's
 * making: it rethrows, so the check fails with how the process ended.
 */
export async function settle<T>(ms: number, p: Promise<T>): Promise<Settled<T>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ ok: "timeout" }>((r) => (timer = setTimeout(() => r({ ok: "timeout" }), ms)));
  try {
    const r = await Promise.race([p.then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error })), timeout]);
    if (r.ok === false && r.error instanceof HostGone) throw r.error;
    return r;
  } finally {
    clearTimeout(timer);
  }
}

export function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name === "Error" ? "" : e.name + ": "}${e.message}`;
  return describeValue(e);
}

export const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? "" : "s"}`;
