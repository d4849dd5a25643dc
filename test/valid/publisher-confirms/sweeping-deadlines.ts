// Valid: per-message confirm callbacks, with the deadlines enforced by one interval timer that sweeps the expired publishes every 20 ms (so a rejection lands up to 20 ms after its deadline); the publisher is a class, handed out as a plain object
import { randomUUID } from "node:crypto";
import type { ChannelModel, ConfirmChannel } from "amqplib";
import { DEFAULT_CONFIRM_TIMEOUT_MS } from "msglab/contracts/publisher-confirms";
import type { DomainEvent, Publisher, PublisherOptions, PublishReceipt } from "msglab/contracts/publisher-confirms";

interface Waiting {
  expires: number;
  reject: (e: Error) => void;
}

class ConfirmingPublisher implements Publisher {
  private readonly waiting = new Set<Waiting>();
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly ch: ConfirmChannel,
    private readonly exchange: string,
    private readonly timeoutMs: number,
  ) {
    ch.on("close", () => (this.closed = true));
    ch.on("error", () => {});
  }

  publish(routingKey: string, event: DomainEvent): Promise<PublishReceipt> {
    const messageId = randomUUID();
    return new Promise<PublishReceipt>((resolve, reject) => {
      const w: Waiting = { expires: performance.now() + this.timeoutMs, reject };
      this.waiting.add(w);
      this.sweep();
      const done = (err: Error | null) => {
        if (!this.waiting.delete(w)) return;
        if (err) reject(err);
        else resolve({ messageId });
      };
      try {
        this.ch.publish(
          this.exchange,
          routingKey,
          Buffer.from(JSON.stringify(event)),
          { persistent: true, messageId, timestamp: Math.floor(Date.now() / 1000), contentType: "application/json" },
          (err) => done(err ? new Error(`not confirmed: ${err.message}`) : null),
        );
      } catch (e) {
        done(e as Error);
      }
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.ch.close();
  }

  /** Runs while anything waits: rejects what passed its deadline. */
  private sweep(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => {
      const now = performance.now();
      for (const w of [...this.waiting]) {
        if (w.expires > now) continue;
        this.waiting.delete(w);
        w.reject(new Error(`no confirm within ${this.timeoutMs} ms`));
      }
      if (this.waiting.size === 0) {
        clearInterval(this.sweeper);
        this.sweeper = undefined;
      }
    }, 20);
  }
}

export async function createPublisher(connection: ChannelModel, exchange: string, options: PublisherOptions = {}): Promise<Publisher> {
  const ch = await connection.createConfirmChannel();
  await ch.assertExchange(exchange, "topic", { durable: true });
  const publisher = new ConfirmingPublisher(ch, exchange, options.confirmTimeoutMs ?? DEFAULT_CONFIRM_TIMEOUT_MS);
  return { publish: (key, event) => publisher.publish(key, event), close: () => publisher.close() };
}
