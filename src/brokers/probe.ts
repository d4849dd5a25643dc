import { connect as tcpConnect } from "node:net";
import type { Broker } from "../catalog/types.ts";
import { amqpHostPort } from "../config.ts";
import { redact } from "../kit/rabbit.ts";

export interface BrokerSettings {
  amqpUrl: string;
  kafkaBrokers: string[];
}

/** Resolves true when something accepts TCP on host:port. A cheap first look before a protocol round trip. */
export function tcpOpen(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** A real AMQP round trip: connect, open a channel, close. */
export async function probeRabbit(url: string, timeoutMs = 3000): Promise<string | null> {
  const { host, port } = amqpHostPort(url);
  const where = redact(url);
  if (!(await tcpOpen(host, port, timeoutMs))) {
    return `RabbitMQ is not reachable at ${where} (nothing listens on ${host}:${port}): run \`msglab up\`, or set MSGLAB_AMQP_URL to a broker that runs.`;
  }
  const amqp = await import("amqplib");
  try {
    const conn = await amqp.connect(url, { timeout: timeoutMs });
    conn.on("error", () => {});
    const ch = await conn.createChannel();
    await ch.close();
    await conn.close();
    return null;
  } catch (e) {
    return `RabbitMQ at ${where} accepted a connection but the AMQP handshake failed (${(e as Error).message}). Check the user and password in MSGLAB_AMQP_URL, then run \`msglab doctor\`.`;
  }
}

/** A real Kafka round trip: admin connect and a metadata request. */
export async function probeKafka(brokers: string[], timeoutMs = 3000): Promise<string | null> {
  const list = brokers.join(",");
  const [host, port] = (brokers[0] ?? "").split(":");
  if (!(await tcpOpen(host ?? "127.0.0.1", Number(port), timeoutMs))) {
    return `Kafka is not reachable at ${list}: run \`msglab up\`, or set MSGLAB_KAFKA_BROKERS to a cluster that runs.`;
  }
  const { Kafka, logLevel } = await import("kafkajs");
  const admin = new Kafka({ brokers, clientId: "msglab-probe", logLevel: logLevel.NOTHING, connectionTimeout: timeoutMs, retry: { retries: 1 } }).admin();
  try {
    await admin.connect();
    await admin.listTopics();
    return null;
  } catch (e) {
    return `Kafka at ${list} accepted a connection but did not answer a metadata request (${(e as Error).message}). It may still be starting: run \`msglab up\`, which waits until it is ready.`;
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

/** null when the broker answers; otherwise a message that names the fix. */
export async function probeBroker(broker: Broker, settings: BrokerSettings): Promise<string | null> {
  if (broker === "rabbitmq") return probeRabbit(settings.amqpUrl);
  if (broker === "kafka") return probeKafka(settings.kafkaBrokers);
  return null;
}
