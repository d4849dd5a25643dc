import type { ConsumerDeps, RunningConsumer } from "msglab/contracts/exactly-once-consumer";

/**
 * A consumer that applies each record's effect exactly once, across crashes and restarts.
 *
 * This starting point is the usual at-least-once consumer: it works until the process dies at
 * the wrong moment. Then a restart applies some records a second time.
 */
export async function startConsumer(deps: ConsumerDeps): Promise<RunningConsumer> {
  const { kafka, topic, groupId, db } = deps;

  // TODO: create a processed-messages table (if it does not exist yet): which columns identify
  // a record? Keys and values repeat, and every partition numbers its offsets from 0.
  void db;

  // TODO: check the isolation level: records of aborted transactions must never be applied.
  const consumer = kafka.consumer({ groupId });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    // TODO: kafkajs commits offsets by itself here (autoCommit is on by default). Commit them
    // yourself, and only once the effect is safely in the database.
    eachMessage: async ({ topic, partition, message }) => {
      // TODO: skip records already processed, and record this one as processed in the SAME
      // SQLite transaction as its effect (better-sqlite3: db.transaction(fn)). applyEffect can
      // throw: then nothing of the record may be committed, and it must come again.
      deps.applyEffect({ topic, partition, message });
    },
  });

  return {
    async stop(): Promise<void> {
      await consumer.disconnect();
    },
  };
}
