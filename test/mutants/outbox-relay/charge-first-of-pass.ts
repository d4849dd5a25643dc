// Mutant: publishes the pass at once, marks the confirmed prefix, but charges a failure to the first row of the pass: a nack in the middle of a pass counts against a row already marked, and the failing row's backoff never grows
// @targets a publish the broker nacks is a failed attempt: counted on the row, retried with exponential backoff, never marked
import type { ChannelModel, ConfirmChannel } from "amqplib";
import type { OutboxRow, Relay, RelayOptions } from "msglab/contracts/outbox-relay";

type Outcome = { ok: true } | { ok: false; error: unknown };

export async function startRelay(opts: RelayOptions): Promise<Relay> {
  const { db, clock } = opts;
  const select = db.prepare(`SELECT id, aggregate_id, event_type, payload FROM outbox WHERE processed_at IS NULL ORDER BY created_at ASC, id ASC LIMIT ?`);
  const markOne = db.prepare(`UPDATE outbox SET processed_at = @at WHERE id = @id`);
  const markMany = db.transaction((ids: string[], at: string) => {
    for (const id of ids) markOne.run({ at, id });
  });
  const charge = db.prepare(`UPDATE outbox SET retry_count = retry_count + 1, error = ? WHERE id = ?`);
  const countOf = db.prepare(`SELECT retry_count FROM outbox WHERE id = ?`);
  const ac = new AbortController();
  let conn: ChannelModel | undefined;
  let ch: ConfirmChannel | undefined;

  async function close(): Promise<void> {
    const c = conn;
    conn = undefined;
    ch = undefined;
    if (c) await c.close().catch(() => undefined);
  }

  async function ensure(): Promise<ConfirmChannel> {
    if (ch) return ch;
    conn = await opts.connect();
    conn.on("error", () => undefined);
    conn.on("close", () => {
      conn = undefined;
      ch = undefined;
    });
    ch = await conn.createConfirmChannel();
    ch.on("error", () => undefined);
    return ch;
  }

  function send(c: ConfirmChannel, r: Pick<OutboxRow, "id" | "aggregate_id" | "event_type" | "payload">): Promise<Outcome> {
    return new Promise((resolve) => {
      try {
        c.publish(
          opts.exchange,
          r.event_type,
          Buffer.from(r.payload, "utf8"),
          { persistent: true, messageId: r.id, type: r.event_type, contentType: "application/json", headers: { aggregateId: r.aggregate_id } },
          (err) => resolve(err ? { ok: false, error: err } : { ok: true }),
        );
      } catch (error) {
        resolve({ ok: false, error });
      }
    });
  }

  async function failed(id: string, error: unknown): Promise<void> {
    const text = error instanceof Error && error.message ? error.message : String(error || "publish failed");
    charge.run(text, id);
    const n = (countOf.get(id) as { retry_count: number }).retry_count;
    await close();
    await clock.sleep(Math.min(opts.maxDelayMs, opts.baseDelayMs * Math.pow(2, n - 1)), ac.signal);
  }

  async function run(): Promise<void> {
    while (!ac.signal.aborted) {
      const rows = select.all(opts.batchSize) as OutboxRow[];
      if (!rows.length) {
        await clock.sleep(opts.pollIntervalMs, ac.signal);
        continue;
      }
      let c: ConfirmChannel;
      try {
        c = await ensure();
      } catch (e) {
        await failed(rows[0]!.id, e);
        continue;
      }
      const outcomes = await Promise.all(rows.map((r) => send(c, r)));
      if (ac.signal.aborted) return;
      const firstBad = outcomes.findIndex((o) => !o.ok);
      const good = firstBad < 0 ? rows : rows.slice(0, firstBad);
      if (good.length) markMany(good.map((r) => r.id), new Date(clock.now()).toISOString());
      if (firstBad >= 0) await failed(rows[0]!.id, (outcomes[firstBad] as { error: unknown }).error);
    }
  }

  const done = run()
    .catch(() => undefined)
    .finally(close);

  return {
    async stop() {
      ac.abort();
      await close();
      await done;
    },
  };
}
