// Mutant: gives up on a slow handler after 2 s (Promise.race with a timer) and rejects the delivery with requeue while the handler is still working: a slow job runs twice, and one that is slow every time is dead-lettered
// @targets a message that fails fewer times than the limit allows is handled once and never dead-lettered
// Poison messages leave on their own: a quorum queue with a delivery limit and a dead-letter route.
// Reference solution.
import type { Channel, ConsumeMessage } from "amqplib";
import type { Job, JobConsumer, JobHandler, PoisonQueueSpec } from "msglab/contracts/poison-quorum";

/** At-least-once dead-lettering exists from RabbitMQ 3.10 on: compare major.minor as numbers. */
export function supportsAtLeastOnceDeadLettering(version: string): boolean {
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (!m) return false;
  const major = Number(m[1]);
  const minor = Number(m[2]);
  return major > 3 || (major === 3 && minor >= 10);
}

export async function declarePoisonQueue(ch: Channel, spec: PoisonQueueSpec): Promise<void> {
  // The dead-letter queue first, so a dead-lettered message always has somewhere to go.
  await ch.assertQueue(spec.deadLetterQueue, { durable: true, arguments: { "x-queue-type": "quorum" } });
  const args: Record<string, unknown> = {
    "x-queue-type": "quorum",
    // Always explicit: 4.x defaults quorum queues to 20, 3.x to no limit at all.
    "x-delivery-limit": spec.deliveryLimit,
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": spec.deadLetterQueue,
  };
  if (supportsAtLeastOnceDeadLettering(String(ch.connection.serverProperties.version ?? ""))) {
    args["x-dead-letter-strategy"] = "at-least-once";
    args["x-overflow"] = "reject-publish";
  }
  await ch.assertQueue(spec.queue, { durable: true, arguments: args });
}

export async function consumeJobs(ch: Channel, queue: string, handle: JobHandler): Promise<JobConsumer> {
  await ch.prefetch(1);
  const onMessage = async (msg: ConsumeMessage | null): Promise<void> => {
    if (!msg) return;
    let job: Job;
    try {
      job = JSON.parse(msg.content.toString("utf8")) as Job;
    } catch {
      // Every body is a job; one that is not can never succeed: let the broker count it out.
      ch.reject(msg, true);
      return;
    }
    try {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([handle(job), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("handler timed out")), 2000)))]).finally(() => clearTimeout(timer));
    } catch {
      // basic.reject with requeue: a failed delivery on every version (4.3+ does not count a nack).
      ch.reject(msg, true);
      return;
    }
    ch.ack(msg);
  };
  const { consumerTag } = await ch.consume(queue, (msg) => void onMessage(msg), { noAck: false });
  return {
    async stop() {
      await ch.cancel(consumerTag);
    },
  };
}
