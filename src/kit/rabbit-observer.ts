import type { Channel, ChannelModel } from "amqplib";

/** The AMQP reply code of a channel error (404 NOT_FOUND, 406 PRECONDITION_FAILED, ...), if any. */
export function amqpCode(e: unknown): number | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "number" ? code : undefined;
}

/** The broker's own words from an amqplib channel error, for a learner-facing message. */
export function brokerText(e: unknown): string {
  const m = /with message "([^"]*)"/.exec(String((e as Error)?.message ?? e));
  return m ? m[1]! : String((e as Error)?.message ?? e);
}

/**
 * The grader's own view of RabbitMQ, on its own connection. A failed passive declare or a
 * re-declare probe closes its channel, so probes get throwaway channels and the counting
 * channel heals itself.
 */
export class QueueObserver {
  private ch: Channel | undefined;
  constructor(readonly conn: ChannelModel) {}

  /** A channel for one operation that may close it (a failed passive or re-declare). */
  async throwaway(): Promise<Channel> {
    const ch = await this.conn.createChannel();
    ch.on("error", () => {});
    return ch;
  }

  /** messageCount counts ready messages only (not delivered and unacked ones). Null: no such queue. */
  async count(queue: string): Promise<{ messageCount: number; consumerCount: number } | null> {
    if (!this.ch) {
      this.ch = await this.throwaway();
      this.ch.on("close", () => (this.ch = undefined));
    }
    try {
      const { messageCount, consumerCount } = await this.ch.checkQueue(queue);
      return { messageCount, consumerCount };
    } catch (e) {
      this.ch = undefined;
      if (amqpCode(e) === 404) return null;
      throw e;
    }
  }
}
