// Valid: a classic dead-letter queue, the work queue's dead-letter route given with amqplib's deadLetterExchange / deadLetterRoutingKey options, the version split on "." and "-", and a prefetch of 3 with each handler awaited in turn
import type { Channel, ConsumeMessage } from "amqplib";
import type { JobConsumer, JobHandler, PoisonQueueSpec } from "msglab/contracts/poison-quorum";

function atLeastOnce(version: string): boolean {
  const [major = 0, minor = 0] = version.split(/[.-]/).map((p) => Number.parseInt(p, 10));
  if (major !== 3) return major > 3;
  return minor >= 10;
}

export async function declarePoisonQueue(ch: Channel, spec: PoisonQueueSpec): Promise<void> {
  await ch.assertQueue(spec.deadLetterQueue, { durable: true, exclusive: false, autoDelete: false });
  const version = String(ch.connection.serverProperties.version ?? "0.0.0");
  const extra: Record<string, unknown> = atLeastOnce(version) ? { "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish" } : {};
  await ch.assertQueue(spec.queue, {
    durable: true,
    exclusive: false,
    autoDelete: false,
    deadLetterExchange: "",
    deadLetterRoutingKey: spec.deadLetterQueue,
    arguments: { "x-queue-type": "quorum", "x-delivery-limit": spec.deliveryLimit, ...extra },
  });
}

export async function consumeJobs(ch: Channel, queue: string, handle: JobHandler): Promise<JobConsumer> {
  await ch.prefetch(3);
  let chain: Promise<void> = Promise.resolve();
  const work = async (msg: ConsumeMessage) => {
    try {
      await handle(JSON.parse(msg.content.toString("utf8")));
    } catch {
      ch.reject(msg, true);
      return;
    }
    ch.ack(msg);
  };
  const { consumerTag } = await ch.consume(queue, (msg) => {
    if (msg) chain = chain.then(() => work(msg)).catch(() => {});
  });
  return { stop: async () => void (await ch.cancel(consumerTag)) };
}
