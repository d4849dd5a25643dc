// Mutant: processes each batch in two transactions: one for the batch's effects, then one for its 'processed' rows
// @targets SIGKILL right after the transaction with a message's effect commits, before anything else reaches the database or the broker: after the restart its effect exists exactly once
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
  const consumer = kafka.consumer({ groupId, readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  void processOnce;
  const isProcessed = db.prepare("SELECT 1 FROM processed_messages WHERE topic = ? AND partition = ? AND offset = ?");
  const applyAll = db.transaction((records: ConsumedRecord[]) => {
    for (const r of records) deps.applyEffect(r);
  });
  const markAll = db.transaction((records: ConsumedRecord[]) => {
    for (const r of records) markProcessed.run(r.topic, r.partition, r.message.offset);
  });
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      const records = batch.messages.map((message) => ({ topic: batch.topic, partition: batch.partition, message }));
      const fresh = records.filter((r) => !isProcessed.get(r.topic, r.partition, r.message.offset));
      applyAll(fresh);
      markAll(fresh);
      const last = batch.messages[batch.messages.length - 1];
      if (last) await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(last.offset) + 1n).toString() }]);
    },
  });

  return {
    async stop(): Promise<void> {
      await consumer.disconnect();
    },
  };
}
