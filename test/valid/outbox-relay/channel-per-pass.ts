// Valid: keeps one connection, opens a fresh confirm channel for every pass and closes it after; each row is published and then awaited with waitForConfirms() before the next; the failure is recorded with a separate SELECT instead of RETURNING
import type { ChannelModel, ConfirmChannel } from "amqplib";
import type { OutboxRow, Relay, RelayOptions } from "msglab/contracts/outbox-relay";

export async function startRelay(opts: RelayOptions): Promise<Relay> {
  const { db, clock } = opts;
  const pending = db.prepare("SELECT * FROM outbox WHERE processed_at IS NULL ORDER BY created_at, id LIMIT ?");
  const mark = db.prepare("UPDATE outbox SET processed_at = ? WHERE id = ?");
  const bump = db.prepare("UPDATE outbox SET retry_count = retry_count + 1, error = ? WHERE id = ?");
  const countOf = db.prepare("SELECT retry_count FROM outbox WHERE id = ?");
  const abort = new AbortController();
  let conn: ChannelModel | null = null;

  const closeConn = async () => {
    const c = conn;
    conn = null;
    if (c) await c.close().catch(() => {});
  };

  const onePass = async (rows: OutboxRow[]) => {
    if (!conn) {
      const c = await opts.connect();
      c.on("error", () => {});
      c.on("close", () => {
        if (conn === c) conn = null;
      });
      conn = c;
    }
    const ch: ConfirmChannel = await conn.createConfirmChannel();
    ch.on("error", () => {});
    try {
      for (const row of rows) {
        if (abort.signal.aborted) return;
        ch.publish(opts.exchange, row.event_type, Buffer.from(row.payload, "utf8"), {
          persistent: true,
          messageId: row.id,
          type: row.event_type,
          contentType: "application/json",
          headers: { aggregateId: row.aggregate_id },
        });
        await ch.waitForConfirms();
        mark.run(new Date(clock.now()).toISOString(), row.id);
      }
    } finally {
      await ch.close().catch(() => {});
    }
  };

  const loop = (async () => {
    while (!abort.signal.aborted) {
      const rows = pending.all(opts.batchSize) as OutboxRow[];
      try {
        if (rows.length === 0) {
          await clock.sleep(opts.pollIntervalMs, abort.signal);
          continue;
        }
        try {
          await onePass(rows);
        } catch (e) {
          if (abort.signal.aborted) break;
          // Rows before the failed one are marked: the oldest pending row is the one that failed.
          const head = (pending.all(1) as OutboxRow[])[0]!;
          bump.run(e instanceof Error && e.message ? e.message : String(e), head.id);
          const n = (countOf.get(head.id) as { retry_count: number }).retry_count;
          await closeConn();
          await clock.sleep(Math.min(opts.maxDelayMs, opts.baseDelayMs * 2 ** (n - 1)), abort.signal);
        }
      } catch {
        // A sleep aborted by stop().
        break;
      }
    }
    await closeConn();
  })();

  return {
    async stop() {
      abort.abort();
      await closeConn();
      await loop;
    },
  };
}
