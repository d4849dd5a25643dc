// Attack: two commits (wrong): the effect in deps.db, the 'processed' mark in a second database of its own in the grading's shared folder (every host may write it, and a restarted host finds it there), which the crash image of deps.db does not cover.
// @expect fail|error
// @only 3 | 4 | 5
import Database from "better-sqlite3";
import { dirname, join } from "node:path";
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
  const { kafka, topic, groupId } = deps;
  // Marks in a database of my own in the grading's shared folder (hosts/N/service.db -> shared/).
  const db = new Database(join(dirname(dirname(dirname(deps.db.name))), "shared", "eoc-marks.db"));
  db.pragma("busy_timeout = 5000");
  db.exec(`CREATE TABLE IF NOT EXISTS processed_messages (topic TEXT NOT NULL, partition INTEGER NOT NULL, offset TEXT NOT NULL, PRIMARY KEY (topic, partition, offset))`);
  const isProcessed = db.prepare("SELECT 1 FROM processed_messages WHERE topic = ? AND partition = ? AND offset = ?");
  const markProcessed = db.prepare("INSERT OR IGNORE INTO processed_messages (topic, partition, offset) VALUES (?, ?, ?)");
  const effect = deps.db.transaction((record: ConsumedRecord) => deps.applyEffect(record));
  const processOnce = (record: ConsumedRecord): boolean => {
    if (isProcessed.get(record.topic, record.partition, record.message.offset)) return false;
    effect(record);
    markProcessed.run(record.topic, record.partition, record.message.offset);
    return true;
  };

  // read_committed (kafkajs's default, spelled out): records of aborted transactions are
  // never delivered, and nothing of an open transaction is delivered before it commits.
  const consumer = kafka.consumer({ groupId, readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    // kafkajs would otherwise commit offsets on its own schedule; the commit must follow the
    // SQLite transaction, so it is ours to make.
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      processOnce({ topic, partition, message });
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
