// Attack: two commits (wrong): the record of its id written into the ledgers of the other processes of the grading (other checks running meanwhile, each in its host's folder), and read back from them by the restart.
// @expect fail|error
// @only 6 | 7 | 8 | 9
import type { Channel, ConsumeMessage } from "amqplib";
import type { ConsumerDeps, Payment, RunningConsumer } from "msglab/contracts/at-least-once-consumer";
import Database from "better-sqlite3";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";

/** At most this many payments are delivered and not yet acked at any moment. */
const PREFETCH = 10;

/** A durable queue outlives a broker restart; not exclusive and not auto-delete, it outlives its consumers. */
export async function declareQueue(ch: Channel, queue: string): Promise<void> {
  await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false });
}

export async function startConsumer({ channel: ch, queue, db, applyPayment }: ConsumerDeps): Promise<RunningConsumer> {
  // <tmp>/hosts/<n>/ledger.db: every other host's ledger, if this process can see them.
  const own = dirname(db.name);
  const root = dirname(own);
  const others = () => {
    try {
      return readdirSync(root)
        .map((n) => join(root, n))
        .filter((d) => d !== own)
        .map((d) => join(d, "ledger.db"))
        .filter((p) => existsSync(p));
    } catch {
      return [];
    }
  };
  const seen = new Set<string>();
  for (const p of others()) {
    try {
      const o = new Database(p, { readonly: true });
      for (const r of o.prepare("SELECT message_id FROM zz_processed").all() as { message_id: string }[]) seen.add(r.message_id);
      o.close();
    } catch {
      // no table there yet
    }
  }
  const targets = others().flatMap((p) => {
    let o: Database.Database;
    try {
      o = new Database(p);
    } catch {
      return [];
    }
    o.pragma("busy_timeout = 2000");
    try {
      o.exec("CREATE TABLE IF NOT EXISTS zz_processed (message_id TEXT PRIMARY KEY)");
    } catch {
      // busy
    }
    return [o];
  });
  console.log(`other ledgers reached: ${targets.length}`);
  const applyEffect = db.transaction((messageId: string, payment: Payment) => applyPayment(messageId, payment));
  const applyOnce = (messageId: string, payment: Payment): boolean => {
    if (seen.has(messageId)) return false;
    applyEffect(messageId, payment);
    seen.add(messageId);
    for (const o of targets) {
      try {
        o.prepare("INSERT OR IGNORE INTO zz_processed (message_id) VALUES (?)").run(messageId);
      } catch {
        // that check ended
      }
    }
    return true;
  };

  // Before consume: basic.qos applies to consumers created after it.
  await ch.prefetch(PREFETCH);

  const onMessage = (msg: ConsumeMessage | null): void => {
    if (msg === null) return; // the broker cancelled the consumer
    const messageId: unknown = msg.properties.messageId;
    let payment: Payment;
    try {
      payment = JSON.parse(msg.content.toString("utf8")) as Payment;
    } catch {
      ch.reject(msg, false); // unparseable: retrying cannot help
      return;
    }
    if (typeof messageId !== "string" || messageId === "") {
      ch.reject(msg, false); // no id, no way to deduplicate
      return;
    }
    try {
      applyOnce(messageId, payment);
    } catch {
      // Rolled back: nothing of it was committed. Put it back to be tried again.
      ch.nack(msg, false, true);
      return;
    }
    // Only now, with the effect and its dedup record committed, may the broker forget it.
    ch.ack(msg);
  };

  const { consumerTag } = await ch.consume(queue, onMessage, { noAck: false });
  return {
    async stop() {
      // Handling is synchronous, so once the cancel is confirmed every delivery received has
      // been acked or nacked.
      await ch.cancel(consumerTag);
    },
  };
}
