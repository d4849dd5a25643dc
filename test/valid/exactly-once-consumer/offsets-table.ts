// Valid: no row per record; a table holds each partition's next offset, advanced in the effect's own SQLite transaction (a record below it was applied), and the Kafka commit follows
import type { ConsumedRecord, ConsumerDeps, RunningConsumer } from "msglab/contracts/exactly-once-consumer";

export async function startConsumer(deps: ConsumerDeps): Promise<RunningConsumer> {
  const { kafka, topic, groupId, db } = deps;
  db.exec(`CREATE TABLE IF NOT EXISTS consumer_positions (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
  )`);
  const position = db.prepare("SELECT next_offset FROM consumer_positions WHERE topic = ? AND partition = ?").pluck();
  const advance = db.prepare(
    "INSERT INTO consumer_positions (topic, partition, next_offset) VALUES (?, ?, ?) ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
  );
  // Records of a partition come in offset order, so "below the stored position" means "applied".
  const applyOnce = db.transaction((record: ConsumedRecord) => {
    const offset = Number(record.message.offset);
    const next = (position.get(record.topic, record.partition) as number | undefined) ?? 0;
    if (offset < next) return;
    deps.applyEffect(record);
    advance.run(record.topic, record.partition, offset + 1);
  });

  const consumer = kafka.consumer({ groupId, readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      applyOnce({ topic, partition, message });
      await consumer.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }]);
    },
  });
  return { stop: () => consumer.disconnect() };
}
