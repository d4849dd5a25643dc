// Valid: prefetch 10 with handler calls running side by side (each delivery settled on its own), a
// classic dead-letter queue, assertQueue's named options for the dead-letter route and the overflow,
// and the version compared with split(".")
import type { Channel, ConsumeMessage } from "amqplib";
import type { Job, JobConsumer, JobHandler, PoisonQueueSpec } from "msglab/contracts/poison-quorum";

function atLeastOnce(version: string): boolean {
  const [major = 0, minor = 0] = version.split(".").map((p) => parseInt(p, 10));
  if (major !== 3) return major > 3;
  return minor >= 10;
}

export async function declarePoisonQueue(ch: Channel, spec: PoisonQueueSpec): Promise<void> {
  await ch.assertQueue(spec.deadLetterQueue, { durable: true });
  const alo = atLeastOnce(ch.connection.serverProperties.version);
  await ch.assertQueue(spec.queue, {
    durable: true,
    deadLetterExchange: "",
    deadLetterRoutingKey: spec.deadLetterQueue,
    ...(alo ? { overflow: "reject-publish" } : {}),
    arguments: {
      "x-queue-type": "quorum",
      "x-delivery-limit": spec.deliveryLimit,
      ...(alo ? { "x-dead-letter-strategy": "at-least-once" } : {}),
    },
  });
}

export async function consumeJobs(ch: Channel, queue: string, handle: JobHandler): Promise<JobConsumer> {
  await ch.prefetch(10);
  const reply = await ch.consume(queue, (msg: ConsumeMessage | null) => {
    if (msg === null) return;
    const job = JSON.parse(msg.content.toString("utf8")) as Job;
    handle(job).then(
      () => ch.ack(msg),
      () => ch.reject(msg, true),
    );
  });
  return { stop: async () => void (await ch.cancel(reply.consumerTag)) };
}
