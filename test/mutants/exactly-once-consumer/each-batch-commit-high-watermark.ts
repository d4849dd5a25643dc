// Mutant: eachBatch commits batch.highWatermark, which lies beyond the records an open transaction still holds back from a read_committed consumer
// @targets offsets are committed by your code, each only after the effects it covers are in the database, and reach the end of every partition
import type { ConsumedRecord, ConsumerDeps, RunningConsumer } from "msglab/contracts/exactly-once-consumer";

export async function startConsumer(deps: ConsumerDeps): Promise<RunningConsumer> {
  const { kafka, topic, groupId, db } = deps;
  db.exec(`CREATE TABLE IF NOT EXISTS processed_messages (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
  )`);
  const mark = db.prepare("INSERT OR IGNORE INTO processed_messages (topic, partition, offset) VALUES (?, ?, ?)");
  const applyBatch = db.transaction((records: ConsumedRecord[]) => {
    for (const r of records) {
      if (mark.run(r.topic, r.partition, Number(r.message.offset)).changes === 1) deps.applyEffect(r);
    }
  });

  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch }) => {
      const last = batch.messages[batch.messages.length - 1];
      if (!last) return;
      // A failing effect rolls the whole batch back and rethrows: kafkajs delivers it again.
      applyBatch(batch.messages.map((message) => ({ topic: batch.topic, partition: batch.partition, message })));
      await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: batch.highWatermark }]);
    },
  });
  return { stop: () => consumer.disconnect() };
}
