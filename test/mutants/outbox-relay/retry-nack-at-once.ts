// Mutant: retries a nacked publish twice at once on the same channel before counting a failure: the broker is hammered, and the attempts are neither counted nor backed off
// @targets a publish the broker nacks is a failed attempt: counted on the row, retried with exponential backoff, never marked
// The outbox relay: pending rows, oldest first, to the broker with publisher confirms; a row is
// marked processed only once its confirm has arrived. Reference solution.
import type { ChannelModel, ConfirmChannel } from "amqplib";
import type { OutboxRow, Relay, RelayOptions } from "msglab/contracts/outbox-relay";

function messageOf(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m || "unknown error";
}

export async function startRelay(opts: RelayOptions): Promise<Relay> {
  const { db, clock } = opts;
  const pending = db.prepare("SELECT * FROM outbox WHERE processed_at IS NULL ORDER BY created_at, id LIMIT ?");
  const mark = db.prepare("UPDATE outbox SET processed_at = ? WHERE id = ?");
  const fail = db.prepare("UPDATE outbox SET retry_count = retry_count + 1, error = ? WHERE id = ? RETURNING retry_count");
  const stopping = new AbortController();
  let conn: ChannelModel | null = null;
  let ch: ConfirmChannel | null = null;

  const drop = async () => {
    const c = conn;
    conn = null;
    ch = null;
    await c?.close().catch(() => {});
  };

  const channel = async (): Promise<ConfirmChannel> => {
    if (ch) return ch;
    const c = await opts.connect();
    conn = c;
    c.on("error", () => {});
    const made = await c.createConfirmChannel();
    made.on("error", () => {});
    // A channel the broker or the network closed is of no more use: the next attempt reconnects.
    made.on("close", () => {
      if (ch === made) void drop();
    });
    ch = made;
    return made;
  };

  const publish = (c: ConfirmChannel, row: OutboxRow) =>
    new Promise<void>((resolve, reject) => {
      try {
        c.publish(opts.exchange, row.event_type, Buffer.from(row.payload, "utf8"), {
          persistent: true,
          messageId: row.id,
          type: row.event_type,
          contentType: "application/json",
          headers: { aggregateId: row.aggregate_id },
        }, (err) => (err ? reject(err) : resolve()));
      } catch (e) {
        reject(e);
      }
    });

  /** One pass: true when it found rows (poll again at once), false when there were none. */
  const pass = async (): Promise<boolean> => {
    const rows = pending.all(opts.batchSize) as OutboxRow[];
    if (rows.length === 0) return false;
    for (const row of rows) {
      if (stopping.signal.aborted) return true;
      try {
        const c = await channel();
        for (let i = 0; ; i++) {
          try {
            await publish(c, row);
            break;
          } catch (e) {
            // A nack: the broker may take it on a second try; only a dead channel counts at once.
            if (i >= 2 || ch !== c) throw e;
          }
        }
      } catch (e) {
        // Stopping closed the channel under a publish: that is no failure of the row's.
        if (stopping.signal.aborted) return true;
        // The oldest pending row is this one: every row before it in the pass is marked.
        const { retry_count } = fail.get(messageOf(e), row.id) as { retry_count: number };
        await drop();
        await clock.sleep(Math.min(opts.maxDelayMs, opts.baseDelayMs * 2 ** (retry_count - 1)), stopping.signal);
        return true;
      }
      mark.run(new Date(clock.now()).toISOString(), row.id);
    }
    return true;
  };

  const loop = (async () => {
    try {
      while (!stopping.signal.aborted) {
        if (!(await pass())) await clock.sleep(opts.pollIntervalMs, stopping.signal);
      }
    } catch (e) {
      if (!stopping.signal.aborted) throw e;
    } finally {
      await drop();
    }
  })();
  loop.catch(() => {});

  return {
    async stop() {
      stopping.abort(new Error("relay stopped"));
      // A publish waiting for its confirm is abandoned: its row stays pending for the next relay.
      await drop();
      await loop.catch(() => {});
    },
  };
}
