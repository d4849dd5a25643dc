// Valid: another schema (one TEXT key "topic:partition:offset" in an inbox table), looked up with SELECT, the effect written before the mark inside the same transaction
import type { ConsumedRecord, ConsumerDeps, RunningConsumer } from "msglab/contracts/exactly-once-consumer";

export async function startConsumer(deps: ConsumerDeps): Promise<RunningConsumer> {
  const { kafka, topic, groupId, db } = deps;
  db.exec("CREATE TABLE IF NOT EXISTS inbox (message_id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL)");
  const seen = db.prepare("SELECT 1 FROM inbox WHERE message_id = ?");
  const remember = db.prepare("INSERT INTO inbox (message_id, seen_at) VALUES (?, ?)");
  const handle = db.transaction((r: ConsumedRecord) => {
    const messageId = `${r.topic}:${r.partition}:${r.message.offset}`;
    if (seen.get(messageId)) return;
    deps.applyEffect(r);
    remember.run(messageId, Date.now());
  });

  const consumer = kafka.consumer({ groupId, readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachMessage: async (payload) => {
      handle(payload);
      await consumer.commitOffsets([{ topic: payload.topic, partition: payload.partition, offset: `${Number(payload.message.offset) + 1}` }]);
    },
  });
  return {
    async stop() {
      await consumer.disconnect();
    },
  };
}
