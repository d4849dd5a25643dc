// Observation helpers for the transactional-producer grader: end markers, the last stable
// offset, and reads at either isolation level that report each record's batch header.
import type { Admin, Consumer, Producer } from "kafkajs";
import { LabError } from "../../../src/kit/index.ts";
import { waitForTopicLeaders } from "../../../src/kit/kafka.ts";
import type { CheckContext } from "../../../src/kit/index.ts";
import type { OutgoingMessage } from "../../../src/contracts/transactional-producer.ts";

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
const where = (topic: string, partition: number): string => `${topic}[${partition}]`;

type BatchHeader = { producerId?: string; producerEpoch?: number; inTransaction?: boolean };

/**
 * The grader's eyes on the topics of one check. It writes end markers with a plain producer
 * and reads with consumers of its own: nothing here trusts the learner's code.
 */
export class Observer {
  private producer: Producer | undefined;
  private admin: Admin | undefined;
  private round = 0;

  constructor(
    private readonly t: CheckContext<unknown>,
    readonly topics: TopicSpec[],
  ) {}

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

  /**
   * Writes one end marker to every partition and returns their offsets. Everything written
   * before a marker sits below its offset, so a reader that reaches every marker has seen all
   * that its isolation level lets it see.
   */
  async writeMarkers(): Promise<Markers> {
    const value = `${MARKER_PREFIX}${this.t.seed}:${++this.round}`;
    const offsets = new Map<string, number>();
    for (const topic of this.topics) {
      const results = await this.producer!.send({
        topic: topic.name,
        acks: -1,
        messages: Array.from({ length: topic.partitions }, (_, partition) => ({ partition, value })),
      });
      for (const r of results) offsets.set(where(r.topicName, r.partition), Number(r.baseOffset));
    }
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
    for (const topic of this.topics) {
      // kafkajs's admin lists offsets with isolation READ_COMMITTED: "latest" is the LSO.
      for (const p of await this.admin!.fetchTopicOffsets(topic.name)) out.set(where(topic.name, p.partition), Number(p.offset));
    }
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
      await new Promise((r) => setTimeout(r, 25));
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
      maxWaitTimeInMs: 100,
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

/** Polls the topics' metadata until every partition has a leader. */
/** A short label for a message in failure texts: `#3 (orders, key "k-2")`. */
export function label(batch: OutgoingMessage[], index: number, topicBase: (name: string) => string): string {
  const m = batch[index]!;
  return `#${index} (${topicBase(m.topic)}, key "${m.key}")`;
}

/** Index of each batch message by value; values are unique by construction. */
export function indexByValue(batch: OutgoingMessage[]): Map<string, number> {
  return new Map(batch.map((m, i) => [m.value, i]));
}

/** A promise plus its resolve, for holding a learner's callback until the grader has looked. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/** Settles a learner promise without throwing, so the grader can inspect how it ended. */
export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown } | { ok: "timeout" };

export async function settle<T>(ms: number, p: Promise<T>): Promise<Settled<T>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ ok: "timeout" }>((r) => (timer = setTimeout(() => r({ ok: "timeout" }), ms)));
  try {
    return await Promise.race([p.then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
