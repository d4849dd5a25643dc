// Valid: eachBatch without auto-resolve, two partitions consumed concurrently, one SQLite transaction per record (a SELECT, then the mark and the effect), then resolveOffset, a commit of that record's next offset and a heartbeat
import type { ConsumedRecord, ConsumerDeps, RunningConsumer } from "msglab/contracts/exactly-once-consumer";

export async function startConsumer(deps: ConsumerDeps): Promise<RunningConsumer> {
  const { kafka, topic, groupId, db } = deps;
  db.exec(`CREATE TABLE IF NOT EXISTS inbox (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL, received_at INTEGER NOT NULL,
    UNIQUE (topic, partition, offset)
  )`);
  const seen = db.prepare("SELECT 1 FROM inbox WHERE topic = ? AND partition = ? AND offset = ?");
  const mark = db.prepare("INSERT INTO inbox (topic, partition, offset, received_at) VALUES (?, ?, ?, ?)");
  const handle = db.transaction((r: ConsumedRecord) => {
    const offset = Number(r.message.offset);
    if (seen.get(r.topic, r.partition, offset)) return;
    mark.run(r.topic, r.partition, offset, Date.now());
    deps.applyEffect(r);
  });

  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatchAutoResolve: false,
    partitionsConsumedConcurrently: 2,
    eachBatch: async ({ batch, resolveOffset, heartbeat, isRunning, isStale }) => {
      for (const message of batch.messages) {
        if (!isRunning() || isStale()) break;
        // A failing effect rolls back and leaves the batch: kafkajs fetches again from this record.
        handle({ topic: batch.topic, partition: batch.partition, message });
        resolveOffset(message.offset);
        await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: (BigInt(message.offset) + 1n).toString() }]);
        await heartbeat();
      }
    },
  });
  return {
    async stop() {
      await consumer.disconnect();
    },
  };
}
