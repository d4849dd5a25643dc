// Valid: eachMessage only buffers; a flush every 50 ms applies the buffer in one transaction, then commits each partition's next offset (a failed flush rolls back and is retried with the same records)
import type { ConsumedRecord, ConsumerDeps, RunningConsumer } from "msglab/contracts/exactly-once-consumer";

export async function startConsumer(deps: ConsumerDeps): Promise<RunningConsumer> {
  const { kafka, topic, groupId, db } = deps;
  db.exec(`CREATE TABLE IF NOT EXISTS processed_messages (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, offset TEXT NOT NULL, PRIMARY KEY (topic, partition, offset)
  )`);
  const mark = db.prepare("INSERT OR IGNORE INTO processed_messages (topic, partition, offset) VALUES (?, ?, ?)");
  const applyAll = db.transaction((records: ConsumedRecord[]) => {
    for (const r of records) if (mark.run(r.topic, r.partition, r.message.offset).changes === 1) deps.applyEffect(r);
  });

  const consumer = kafka.consumer({ groupId });
  const buffer: ConsumedRecord[] = [];
  let flushing = false;
  const flush = async () => {
    if (flushing || buffer.length === 0) return;
    flushing = true;
    try {
      const records = buffer.slice();
      applyAll(records); // throws: nothing committed, the buffer stays for the next flush
      buffer.splice(0, records.length);
      const next = new Map<number, bigint>();
      for (const r of records) next.set(r.partition, BigInt(r.message.offset) + 1n);
      await consumer.commitOffsets([...next].map(([partition, offset]) => ({ topic, partition, offset: offset.toString() })));
    } catch {
      // retried on the next tick
    } finally {
      flushing = false;
    }
  };
  const timer = setInterval(() => void flush(), 50);

  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      buffer.push({ topic, partition, message });
    },
  });
  return {
    async stop() {
      clearInterval(timer);
      await consumer.disconnect();
    },
  };
}
