// Mutant: the consumer counts failures in a Map and dead-letters at the limit itself (no x-delivery-limit): after a crash the count restarts from zero
// @targets declarePoisonQueue makes a quorum queue with x-delivery-limit and a dead-letter route to a durable dead-letter queue
// @targets the delivery count is the broker's: after a SIGKILL and a restart in a new process, the poison message is dead-lettered at the same limit
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

let limit = 5;
const failures = new Map<string, number>();

export async function declarePoisonQueue(ch: Channel, spec: PoisonQueueSpec): Promise<void> {
  limit = spec.deliveryLimit;
  // The dead-letter queue first, so a dead-lettered message always has somewhere to go.
  await ch.assertQueue(spec.deadLetterQueue, { durable: true, arguments: { "x-queue-type": "quorum" } });
  const args: Record<string, unknown> = {
    "x-queue-type": "quorum",
    // Always explicit: 4.x defaults quorum queues to 20, 3.x to no limit at all.
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
      await handle(job);
    } catch {
      // Count the failures here and dead-let the job ourselves once the limit is spent.
      const n = (failures.get(job.id) ?? 0) + 1;
      failures.set(job.id, n);
      ch.reject(msg, n <= limit);
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
