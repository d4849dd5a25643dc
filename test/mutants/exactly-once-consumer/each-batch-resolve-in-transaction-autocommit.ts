// Mutant: eachBatch applies the batch in one SQLite transaction and calls resolveOffset inside it, with autoCommit on: when an effect throws, the transaction rolls back but kafkajs commits the offsets already resolved
// @targets when applyEffect throws, nothing of that message is committed (neither its row nor an offset past it), and it is retried until applied exactly once
import type { ConsumedRecord, ConsumerDeps, RunningConsumer } from "msglab/contracts/exactly-once-consumer";

export async function startConsumer(deps: ConsumerDeps): Promise<RunningConsumer> {
  const { kafka, topic, groupId, db } = deps;
  db.exec(`CREATE TABLE IF NOT EXISTS processed_messages (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, offset)
  )`);
  const mark = db.prepare("INSERT OR IGNORE INTO processed_messages (topic, partition, offset) VALUES (?, ?, ?)");
  const applyBatch = db.transaction((records: ConsumedRecord[], resolve: (o: string) => void) => {
    for (const r of records) {
      if (mark.run(r.topic, r.partition, Number(r.message.offset)).changes === 1) deps.applyEffect(r);
      resolve(r.message.offset);
    }
  });

  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    eachBatchAutoResolve: true,
    eachBatch: async ({ batch, resolveOffset }) => {
      const last = batch.messages[batch.messages.length - 1];
      if (!last) return;
      // A failing effect rolls the whole batch back and rethrows: kafkajs delivers it again.
      applyBatch(batch.messages.map((message) => ({ topic: batch.topic, partition: batch.partition, message })), resolveOffset);
    },
  });
  return { stop: () => consumer.disconnect() };
}
