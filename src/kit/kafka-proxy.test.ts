/** The Kafka proxy against the real broker: it must frame, decode, really hold, really drop, and evict. */
import { randomUUID } from "node:crypto";
import net from "node:net";
import type { Kafka } from "kafkajs";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../config.ts";
import { KafkaKit } from "./kafka.ts";
import { ApiKey, KafkaProxy, decodeEndTxn, decodeFetch, decodeJoinGroup, decodeOffsetCommit, decodeTxnOffsetCommit, leaveGroup, type KafkaRequest } from "./kafka-proxy.ts";

const config = loadConfig();
const broker = config.kafkaBrokers[0]!;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => {});
});

async function setup(opts: { fetchMaxWaitMs?: number } = {}) {
  const kit = new KafkaKit(config.kafkaBrokers, "msglab-test-kafka-proxy");
  cleanups.push(() => kit.closeAll());
  const proxy = await KafkaProxy.start(broker, opts);
  cleanups.push(() => proxy.close());
  const seen: KafkaRequest[] = [];
  // Every connection of this client goes to the proxy, whatever the metadata advertises.
  const viaProxy = await kit.client({
    socketFactory: ({ onConnect }) => net.connect({ host: "127.0.0.1", port: proxy.port }, onConnect),
  });
  const topic = `msglab.test.kproxy.${randomUUID()}`;
  await kit.createTopics([topic], 2);
  const admin = await kit.admin();
  cleanups.push(() => admin.deleteTopics({ topics: [topic] }));
  const producer = await kit.producer();
  await producer.send({ topic, messages: [0, 1, 0, 1, 0].map((p, i) => ({ partition: p, value: `v${i}` })) });
  return { kit, proxy, seen, viaProxy, topic, admin };
}

async function committed(admin: Awaited<ReturnType<KafkaKit["admin"]>>, groupId: string, topic: string): Promise<Map<number, string>> {
  const [res] = await admin.fetchOffsets({ groupId, topics: [topic] });
  return new Map((res?.partitions ?? []).map((p) => [p.partition, p.offset]));
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}

function consumer(kafka: Kafka, groupId: string) {
  const c = kafka.consumer({ groupId, sessionTimeout: 30_000, heartbeatInterval: 500 });
  cleanups.push(() => c.disconnect());
  return c;
}

describe("KafkaProxy", () => {
  it("frames every request, decodes OffsetCommit and Fetch, and caps the fetch's long poll", async () => {
    const { proxy, seen, viaProxy, topic, admin } = await setup({ fetchMaxWaitMs: 50 });
    proxy.handler = (req) => void seen.push(req);
    const groupId = `msglab.test.kproxy.g.${randomUUID()}`;
    const c = consumer(viaProxy, groupId);
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    let n = 0;
    const all = new Promise<void>((resolve) => {
      void c.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          await c.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }]);
          if (++n === 5) resolve();
        },
      });
    });
    await all;
    const commits = seen.map((r) => decodeOffsetCommit(r)).filter((x) => x !== null);
    expect(commits.length).toBe(5);
    expect(commits.every((x) => x.groupId === groupId && x.entries.length === 1 && x.entries[0]!.topic === topic)).toBe(true);
    expect(commits.map((x) => `${x.entries[0]!.partition}:${x.entries[0]!.offset}`).sort()).toEqual(["0:1", "0:2", "0:3", "1:1", "1:2"]);
    const joins = seen.map((r) => decodeJoinGroup(r)).filter((x) => x !== null);
    expect(joins[0]!.groupId).toBe(groupId);
    expect(joins[0]!.sessionTimeoutMs).toBe(30_000);
    // The consumer keeps fetching at the end of both partitions, read_committed, with a capped wait.
    await new Promise((r) => setTimeout(r, 200));
    const fetches = seen.map((r) => decodeFetch(r)).filter((x) => x !== null);
    const last = fetches[fetches.length - 1]!;
    expect(last.isolationLevel).toBe(1);
    expect(last.maxWaitMs).toBe(50);
    expect(last.partitions.map((p) => `${p.partition}:${p.fetchOffset}`).sort()).toEqual(["0:3", "1:2"]);
    // What the broker got is what the proxy saw.
    expect(await committed(admin, groupId, topic)).toEqual(new Map([[0, "3"], [1, "2"]]));
    // A caught-up consumer disconnects without waiting out kafkajs's 5 s poll.
    const t0 = performance.now();
    await c.disconnect();
    expect(performance.now() - t0).toBeLessThan(1500);
  });

  it("holds a request and those behind it on its connection, then forwards them in order", async () => {
    const { proxy, viaProxy, topic, admin } = await setup();
    const groupId = `msglab.test.kproxy.g.${randomUUID()}`;
    let release!: () => void;
    const held = new Promise<"forward">((r) => (release = () => r("forward")));
    const order: string[] = [];
    proxy.handler = (req) => {
      const commit = decodeOffsetCommit(req);
      if (commit) {
        order.push(commit.entries.map((e) => e.offset).join(","));
        if (order.length === 1) return held;
      }
    };
    // The admin's offset commits go to the group's coordinator on one connection.
    const viaAdmin = viaProxy.admin();
    await viaAdmin.connect();
    cleanups.push(() => viaAdmin.disconnect());
    const first = viaAdmin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: "1" }] });
    // The first commit is held at the proxy: the broker has nothing.
    await until(() => order.length === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect((await committed(admin, groupId, topic)).get(0)).toBe("-1");
    // A request behind it on the same connection waits too (the proxy has not even seen it).
    let describedSeen = false;
    const inner = proxy.handler;
    proxy.handler = (req) => {
      if (req.apiKey === ApiKey.DescribeGroups) describedSeen = true;
      return inner(req);
    };
    const described = viaAdmin.describeGroups([groupId]);
    await new Promise((r) => setTimeout(r, 100));
    expect(describedSeen).toBe(false);
    release();
    await Promise.all([first, described]);
    expect(describedSeen).toBe(true);
    expect((await committed(admin, groupId, topic)).get(0)).toBe("1");
  });

  it("drops a held request when its client dies: it never reaches the broker", async () => {
    const { proxy, viaProxy, topic, admin } = await setup();
    const groupId = `msglab.test.kproxy.g.${randomUUID()}`;
    let drop: (() => void) | undefined;
    proxy.handler = (req) => {
      if (req.apiKey === ApiKey.OffsetCommit) return new Promise((r) => (drop = () => r("drop")));
    };
    const viaAdmin = viaProxy.admin({ retry: { retries: 0 } });
    await viaAdmin.connect();
    void viaAdmin.setOffsets({ groupId, topic, partitions: [{ partition: 1, offset: "2" }] }).catch(() => {});
    await until(() => drop !== undefined);
    // As a SIGKILL would: every connection of the client goes, and the held request with it.
    proxy.cut();
    drop!();
    await new Promise((r) => setTimeout(r, 200));
    expect((await committed(admin, groupId, topic)).get(1)).toBe("-1");
    cleanups.push(() => viaAdmin.disconnect());
  });

  it("decodes a transactional producer's TxnOffsetCommit and EndTxn", async () => {
    const { proxy, seen, viaProxy, topic } = await setup();
    proxy.handler = (req) => void seen.push(req);
    const producer = viaProxy.producer({ transactionalId: `msglab.test.kproxy.tx.${randomUUID()}`, idempotent: true, maxInFlightRequests: 1 });
    cleanups.push(() => producer.disconnect());
    await producer.connect();
    const tx = await producer.transaction();
    await tx.send({ topic, messages: [{ partition: 0, value: "x" }] });
    await tx.sendOffsets({ consumerGroupId: "msglab.test.kproxy.txg", topics: [{ topic, partitions: [{ partition: 0, offset: "4" }] }] });
    await tx.commit();
    const toc = seen.map((r) => decodeTxnOffsetCommit(r)).find((x) => x !== null);
    expect(toc?.groupId).toBe("msglab.test.kproxy.txg");
    expect(toc?.entries).toEqual([{ topic, partition: 0, offset: "4" }]);
    expect(seen.map((r) => decodeEndTxn(r)).find((x) => x !== null)?.committed).toBe(true);
  });

  it("leaveGroup removes a member that died without leaving", async () => {
    const { kit, proxy, topic, admin } = await setup();
    const groupId = `msglab.test.kproxy.g.${randomUUID()}`;
    // Short request timeouts: once "dead", this client's requests are dropped, never answered.
    const dying = await kit.client({
      requestTimeout: 500,
      retry: { retries: 0 },
      socketFactory: ({ onConnect }) => net.connect({ host: "127.0.0.1", port: proxy.port }, onConnect),
    });
    const c = dying.consumer({ groupId, sessionTimeout: 30_000, heartbeatInterval: 500 });
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    const joined = new Promise<void>((r) => c.on(c.events.GROUP_JOIN, () => r()));
    void c.run({ eachMessage: async () => {} });
    await joined;
    // Dead: no more heartbeats, no LeaveGroup (the client's requests are all dropped from now on).
    proxy.handler = () => "drop";
    proxy.cut();
    const members = (await admin.describeGroups([groupId])).groups[0]!.members.map((m) => m.memberId);
    expect(members.length).toBe(1);
    expect(await leaveGroup(broker, groupId, members)).toEqual([0]);
    expect((await admin.describeGroups([groupId])).groups[0]!.members).toEqual([]);
    // Gone already: UNKNOWN_MEMBER_ID.
    expect(await leaveGroup(broker, groupId, members)).toEqual([25]);
    cleanups.push(() => c.disconnect());
  });
});
