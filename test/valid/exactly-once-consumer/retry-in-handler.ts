// Valid: retries a failed effect inside eachMessage (a fresh transaction each time, with a short pause) instead of rethrowing to kafkajs; the offset is committed only after it succeeded
import type { ConsumedRecord, ConsumerDeps, RunningConsumer } from "msglab/contracts/exactly-once-consumer";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startConsumer(deps: ConsumerDeps): Promise<RunningConsumer> {
  const { kafka, topic, groupId, db } = deps;
  db.exec("CREATE TABLE IF NOT EXISTS done (t TEXT, p INTEGER, o INTEGER, PRIMARY KEY (t, p, o)) WITHOUT ROWID");
  const isDone = db.prepare("SELECT count(*) AS n FROM done WHERE t = ? AND p = ? AND o = ?").pluck();
  const markDone = db.prepare("INSERT INTO done (t, p, o) VALUES (?, ?, ?)");
  const process = db.transaction((r: ConsumedRecord) => {
    const key = [r.topic, r.partition, Number(r.message.offset)] as const;
    if (isDone.get(...key)) return;
    markDone.run(...key);
    deps.applyEffect(r);
  });

  const consumer = kafka.consumer({ groupId });
  let stopping = false;
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    autoCommit: false,
    eachMessage: async (payload) => {
      for (let attempt = 1; ; attempt++) {
        try {
          process(payload);
          break;
        } catch (e) {
          if (stopping || attempt >= 20) throw e;
          await sleep(10 * attempt);
        }
      }
      await consumer.commitOffsets([{ topic: payload.topic, partition: payload.partition, offset: (BigInt(payload.message.offset) + 1n).toString() }]);
    },
  });
  return {
    async stop() {
      stopping = true;
      await consumer.disconnect();
    },
  };
}
