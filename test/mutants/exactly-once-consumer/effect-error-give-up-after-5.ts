// Mutant: retries a failing effect through kafkajs redeliveries, but gives up on the record after 5 failed attempts (a poison-message policy) and commits past it
// @targets when applyEffect throws, nothing of that message is committed (neither its row nor an offset past it), and it is retried until applied exactly once
import type { ConsumedRecord, ConsumerDeps, RunningConsumer } from "msglab/contracts/exactly-once-consumer";

/**
 * An exactly-once consumer: Kafka delivers at least once, and the database makes the effect
 * idempotent. The effect and the "processed" mark commit in ONE SQLite transaction, and the
 * offset is committed to Kafka only after that transaction. A crash anywhere leaves one of
 * three states, each safe on restart:
 *   - before the transaction commits: nothing happened, the record is redelivered and applied;
 *   - after it commits, before the offset commit: the record is redelivered and skipped;
 *   - after the offset commit: the record is not redelivered.
 */
export async function startConsumer(deps: ConsumerDeps): Promise<RunningConsumer> {
  const { kafka, topic, groupId, db } = deps;

  // A record's identity in Kafka is (topic, partition, offset): keys and values repeat.
  db.exec(`
    CREATE TABLE IF NOT EXISTS processed_messages (
      topic TEXT NOT NULL,
      partition INTEGER NOT NULL,
      offset TEXT NOT NULL,
      processed_at TEXT NOT NULL DEFAULT (datetime('now')),
      PRIMARY KEY (topic, partition, offset)
    )
  `);
  const markProcessed = db.prepare("INSERT OR IGNORE INTO processed_messages (topic, partition, offset) VALUES (?, ?, ?)");

  // The mark and the effect commit together or not at all. The mark comes first: if the
  // record was already processed, the insert changes nothing and the effect is skipped.
  const processOnce = db.transaction((record: ConsumedRecord): boolean => {
    const { changes } = markProcessed.run(record.topic, record.partition, record.message.offset);
    if (changes === 0) return false;
    deps.applyEffect(record);
    return true;
  });

  // read_committed (kafkajs's default, spelled out): records of aborted transactions are
  // never delivered, and nothing of an open transaction is delivered before it commits.
  const failures = new Map<string, number>();
  const consumer = kafka.consumer({ groupId, readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    // kafkajs would otherwise commit offsets on its own schedule; the commit must follow the
    // SQLite transaction, so it is ours to make.
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      // If applyEffect throws, the transaction rolls back (the mark with it) and the error
      // leaves eachMessage before the commit: kafkajs delivers the record again.
      try {
        processOnce({ topic, partition, message });
      } catch (e) {
        const k = `${partition}@${message.offset}`;
        const n = (failures.get(k) ?? 0) + 1;
        failures.set(k, n);
        if (n < 5) throw e;
        // poison message: give up after 5 attempts
      }
      // The committed offset is the NEXT record to read: offset + 1. Awaited, so the next
      // record is not processed before this commit is done.
      await consumer.commitOffsets([{ topic, partition, offset: (BigInt(message.offset) + 1n).toString() }]);
    },
  });

  return {
    async stop(): Promise<void> {
      await consumer.disconnect();
    },
  };
}
