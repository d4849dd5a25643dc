// Valid: a consumer class that works through its deliveries strictly one at a time (a promise chain,
// prefetch 3), a version regex with named groups, and stop() that closes the channel instead of
// cancelling the consumer
import type { Channel, ConsumeMessage } from "amqplib";
import type { Job, JobConsumer, JobHandler, PoisonQueueSpec } from "msglab/contracts/poison-quorum";

const VERSION = /^(?<major>\d+)\.(?<minor>\d+)/;

function deadLetterArgs(version: string): Record<string, string> {
  const g = VERSION.exec(version)?.groups;
  const major = Number(g?.major ?? 0);
  const minor = Number(g?.minor ?? 0);
  const ok = major * 1000 + minor >= 3 * 1000 + 10;
  return ok ? { "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish" } : {};
}

export async function declarePoisonQueue(ch: Channel, spec: PoisonQueueSpec): Promise<void> {
  await ch.assertQueue(spec.deadLetterQueue, { durable: true, exclusive: false, autoDelete: false, arguments: { "x-queue-type": "quorum" } });
  await ch.assertQueue(spec.queue, {
    durable: true,
    arguments: {
      "x-queue-type": "quorum",
      "x-dead-letter-exchange": "",
      "x-dead-letter-routing-key": spec.deadLetterQueue,
      "x-delivery-limit": spec.deliveryLimit,
      ...deadLetterArgs(ch.connection.serverProperties.version ?? ""),
    },
  });
}

class SerialConsumer implements JobConsumer {
  private chain: Promise<void> = Promise.resolve();
  constructor(
    private readonly ch: Channel,
    private readonly handle: JobHandler,
  ) {}

  async start(queue: string): Promise<void> {
    await this.ch.prefetch(3);
    await this.ch.consume(queue, (msg) => {
      if (msg) this.chain = this.chain.then(() => this.one(msg));
    });
  }

  private async one(msg: ConsumeMessage): Promise<void> {
    let ok = false;
    try {
      await this.handle(JSON.parse(msg.content.toString("utf8")) as Job);
      ok = true;
    } catch {
      ok = false;
    }
    if (ok) this.ch.ack(msg);
    else this.ch.reject(msg, true);
  }

  async stop(): Promise<void> {
    await this.ch.close();
  }
}

export async function consumeJobs(ch: Channel, queue: string, handle: JobHandler): Promise<JobConsumer> {
  const c = new SerialConsumer(ch, handle);
  await c.start(queue);
  return c;
}
