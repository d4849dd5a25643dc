import type { Admin, Consumer, Kafka, KafkaConfig, Producer } from "kafkajs";
import { LabError } from "./fail.ts";

/**
 * Kafka access for graders, behind one seam: kafkajs is unmaintained, so nothing else in
 * the lab constructs a client. Everything a check opens is disconnected at teardown.
 */
export class KafkaKit {
  private readonly closers: (() => Promise<void>)[] = [];
  private clientPromise: Promise<Kafka> | undefined;
  constructor(readonly brokers: string[], private readonly clientId: string) {}

  /** A kafkajs client with quiet logs and short timeouts, fit for a test broker. */
  async client(overrides: Partial<KafkaConfig> = {}): Promise<Kafka> {
    const { Kafka, logLevel } = await import("kafkajs");
    return new Kafka({
      clientId: this.clientId,
      brokers: this.brokers,
      logLevel: logLevel.NOTHING,
      connectionTimeout: 3000,
      retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1000 },
      ...overrides,
    });
  }

  private shared(): Promise<Kafka> {
    this.clientPromise ??= this.client();
    return this.clientPromise;
  }

  async admin(): Promise<Admin> {
    const admin = (await this.shared()).admin();
    try {
      await admin.connect();
    } catch (e) {
      throw new LabError(`Kafka is not reachable at ${this.brokers.join(",")} (${(e as Error).message}): run \`msglab up\`.`);
    }
    this.closers.push(() => admin.disconnect());
    return admin;
  }

  /** Creates topics and waits until every partition has a leader. */
  async createTopics(topics: (string | TopicSpec)[], partitions = 1): Promise<void> {
    const specs = topics.map((t) => (typeof t === "string" ? { name: t, partitions } : { partitions, ...t }));
    const admin = await this.admin();
    await admin.createTopics({
      // kafkajs's own waitForLeaders gives up on UNKNOWN_TOPIC_OR_PARTITION, which a KRaft
      // broker under load answers for a moment after CreateTopics returns: wait here instead.
      waitForLeaders: false,
      topics: specs.map((s) => ({
        topic: s.name,
        numPartitions: s.partitions,
        replicationFactor: 1,
        configEntries: Object.entries(s.configs ?? {}).map(([name, value]) => ({ name, value })),
      })),
    });
    await waitForTopicLeaders(admin, specs);
  }

  /** A plain (non-transactional) producer owned by the grader. */
  async producer(): Promise<Producer> {
    // Idempotent: kafkajs retries a whole multi-partition request when one partition fails, and
    // without idempotence the partitions that had succeeded get the records twice.
    const producer = (await this.shared()).producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    this.closers.push(() => producer.disconnect());
    return producer;
  }

  /**
   * Reads every record of `topics` that a consumer with the given isolation can see, from
   * the beginning, until a sentinel the grader wrote last shows up on each partition it wrote.
   * Waiting for the sentinel (not a sleep) is what makes "nothing else is visible" exact.
   */
  async readUntilSentinels(opts: {
    topics: string[];
    groupId: string;
    readUncommitted?: boolean;
    isSentinel: (value: string) => boolean;
    expectedSentinels: number;
    timeoutMs?: number;
  }): Promise<{ topic: string; partition: number; offset: string; key: string | null; value: string; headers: Record<string, string> }[]> {
    const kafka = await this.shared();
    const consumer: Consumer = kafka.consumer({
      groupId: opts.groupId,
      readUncommitted: opts.readUncommitted ?? false,
      sessionTimeout: 6000,
      heartbeatInterval: 500,
      maxWaitTimeInMs: 100,
    });
    const seen: { topic: string; partition: number; offset: string; key: string | null; value: string; headers: Record<string, string> }[] = [];
    await consumer.connect();
    this.closers.push(() => consumer.disconnect());
    for (const topic of opts.topics) await consumer.subscribe({ topic, fromBeginning: true });
    let sentinels = 0;
    const timeoutMs = opts.timeoutMs ?? 15000;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new LabError(`Kafka: the grader's own reader saw ${sentinels}/${opts.expectedSentinels} end markers within ${timeoutMs} ms.`)),
        timeoutMs,
      );
      consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ topic, partition, message }) => {
            const value = message.value?.toString() ?? "";
            if (opts.isSentinel(value)) {
              sentinels++;
              if (sentinels >= opts.expectedSentinels) {
                clearTimeout(timer);
                resolve();
              }
              return;
            }
            const headers: Record<string, string> = {};
            for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
            seen.push({ topic, partition, offset: message.offset, key: message.key?.toString() ?? null, value, headers });
          },
        })
        .catch(reject);
    });
    return seen;
  }

  async closeAll(): Promise<void> {
    await Promise.allSettled(this.closers.splice(0).reverse().map((c) => c()));
  }
}

export interface TopicSpec {
  name: string;
  partitions?: number;
  /** Topic configs, e.g. { "max.message.bytes": "2048" }. */
  configs?: Record<string, string>;
}

/** Polls metadata until each topic has all its partitions, each with a leader. */
export async function waitForTopicLeaders(admin: Admin, topics: TopicSpec[], timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    try {
      const { topics: found } = await admin.fetchTopicMetadata({ topics: topics.map((x) => x.name) });
      const ready = topics.every((spec) => {
        const md = found.find((f) => f.name === spec.name);
        return md !== undefined && md.partitions.length === (spec.partitions ?? 1) && md.partitions.every((p) => p.leader >= 0 && p.partitionErrorCode === 0);
      });
      if (ready) return;
      last = "not every partition has a leader yet";
    } catch (e) {
      const type = (e as { type?: string }).type ?? "";
      if (!["UNKNOWN_TOPIC_OR_PARTITION", "LEADER_NOT_AVAILABLE", "NOT_LEADER_FOR_PARTITION"].includes(type)) throw e;
      last = type;
    }
    if (Date.now() > until) throw new LabError(`Kafka: the grader's topics were not ready within ${timeoutMs} ms (${last}).`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Deletes topics and consumer groups a run created, on a client of its own. */
export async function deleteKafkaResources(brokers: string[], resources: { kind: string; name: string }[]): Promise<string[]> {
  const topics = resources.filter((r) => r.kind === "topic").map((r) => r.name);
  const groups = resources.filter((r) => r.kind === "group").map((r) => r.name);
  if (topics.length + groups.length === 0) return [];
  const kit = new KafkaKit(brokers, "msglab-cleanup");
  const done: string[] = [];
  try {
    const admin = await kit.admin();
    const existing = new Set(await admin.listTopics());
    const toDelete = topics.filter((t) => existing.has(t));
    if (toDelete.length) await admin.deleteTopics({ topics: toDelete, timeout: 5000 }).catch(() => {});
    done.push(...topics);
    if (groups.length) {
      const listed = new Set((await admin.listGroups()).groups.map((g) => g.groupId));
      const present = groups.filter((g) => listed.has(g));
      if (present.length) await admin.deleteGroups(present).catch(() => {});
      done.push(...groups);
    }
  } finally {
    await kit.closeAll();
  }
  return done;
}
