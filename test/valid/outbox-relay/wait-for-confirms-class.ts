// Valid: a class whose pass publishes the batch without callbacks and awaits waitForConfirms() once;
// on success it marks the batch in one transaction, on any failure it charges the oldest pending row
// (it does not know which messages were confirmed, so the whole batch is published again later)
import type { ChannelModel, ConfirmChannel } from "amqplib";
import type { Clock, OutboxRow, Relay, RelayOptions } from "msglab/contracts/outbox-relay";

class OutboxRelay implements Relay {
  private readonly controller = new AbortController();
  private model: ChannelModel | null = null;
  private channel: ConfirmChannel | null = null;
  private readonly finished: Promise<void>;
  private readonly clock: Clock;

  constructor(private readonly o: RelayOptions) {
    this.clock = o.clock;
    this.finished = this.loop().then(
      () => this.disconnect(),
      () => this.disconnect(),
    );
  }

  private async disconnect(): Promise<void> {
    const m = this.model;
    this.model = null;
    this.channel = null;
    try {
      await m?.close();
    } catch {
      /* already gone */
    }
  }

  private async confirmChannel(): Promise<ConfirmChannel> {
    if (this.channel) return this.channel;
    const m = await this.o.connect();
    m.on("error", () => {});
    this.model = m;
    const c = await m.createConfirmChannel();
    c.on("error", () => {});
    c.on("close", () => {
      if (this.channel === c) this.channel = null;
    });
    this.channel = c;
    return c;
  }

  private pending(): OutboxRow[] {
    return this.o.db.prepare("SELECT * FROM outbox WHERE processed_at IS NULL ORDER BY created_at, id LIMIT ?").all(this.o.batchSize) as OutboxRow[];
  }

  private async loop(): Promise<void> {
    const { db } = this.o;
    while (!this.controller.signal.aborted) {
      const batch = this.pending();
      if (batch.length === 0) {
        await this.clock.sleep(this.o.pollIntervalMs, this.controller.signal);
        continue;
      }
      try {
        const c = await this.confirmChannel();
        for (const row of batch) {
          c.publish(this.o.exchange, row.event_type, Buffer.from(row.payload, "utf8"), {
            persistent: true,
            messageId: row.id,
            type: row.event_type,
            contentType: "application/json",
            headers: { aggregateId: row.aggregate_id },
          });
        }
        await c.waitForConfirms();
      } catch (error) {
        if (this.controller.signal.aborted) return;
        const head = this.pending()[0]!;
        const message = (error as { message?: string } | null)?.message || "the broker did not confirm";
        const { retry_count } = db.prepare("UPDATE outbox SET retry_count = retry_count + 1, error = ? WHERE id = ? RETURNING retry_count").get(message, head.id) as { retry_count: number };
        await this.disconnect();
        await this.clock.sleep(Math.min(this.o.maxDelayMs, this.o.baseDelayMs * 2 ** (retry_count - 1)), this.controller.signal);
        continue;
      }
      const at = new Date(this.clock.now()).toISOString();
      const mark = db.prepare("UPDATE outbox SET processed_at = ? WHERE id = ?");
      db.transaction(() => batch.forEach((row) => mark.run(at, row.id)))();
    }
  }

  async stop(): Promise<void> {
    this.controller.abort();
    await this.disconnect();
    await this.finished;
  }
}

export async function startRelay(opts: RelayOptions): Promise<Relay> {
  return new OutboxRelay(opts);
}
