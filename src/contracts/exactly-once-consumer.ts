import type BetterSqlite3 from "better-sqlite3";
import type { Kafka, KafkaMessage } from "kafkajs";

/**
 * One consumed record: the part of kafkajs's `eachMessage` payload that identifies it.
 * Passing the whole `eachMessage` payload works too (extra fields are ignored).
 */
export interface ConsumedRecord {
  topic: string;
  partition: number;
  /** As kafkajs delivers it: `offset` is a decimal string, `key` and `value` are Buffers. */
  message: KafkaMessage;
}

/** What the grader hands to `startConsumer()`. */
export interface ConsumerDeps {
  /**
   * The kafkajs client to build your consumer from (`kafka.consumer({ groupId, ... })`).
   * Do not create another client: the grader knows its brokers and timeouts, and every request
   * of this one goes through the grader's proxy, which judges your offset commits.
   */
  kafka: Kafka;
  /** The topic to consume, from the beginning. It has several partitions. */
  topic: string;
  /**
   * The consumer group to join, exactly this one. After a crash, the grader starts your
   * consumer again in a fresh process with the same group id: the committed offsets of this
   * group are where the restart resumes.
   */
  groupId: string;
  /**
   * An open better-sqlite3 connection to the service's database (WAL mode). Keep your own
   * tables in it (create them if they do not exist: after a restart they are still there, as
   * the crash left them). The grader owns the table `ledger`: do not touch it. Use this
   * connection, not one of your own: applyEffect writes through it, and would wait for (then
   * fail on, SQLITE_BUSY) the write lock another connection of yours holds. Keep no state
   * anywhere else (no second database, no file of your own): after a crash the grader fails a
   * process that left one.
   */
  db: BetterSqlite3.Database;
  /**
   * The business effect of one record (it writes one row to the grader's `ledger` table through
   * `db`). Synchronous, like every better-sqlite3 call, so it can run inside your SQLite
   * transaction. Calling it twice for the same record applies the effect twice: that is the
   * duplicate this exercise is about.
   *
   * It can throw (the ledger refuses the write, before or after writing its row). Then nothing
   * of that record may be committed: let the error out of your transaction (it rolls back, your
   * "processed" row with it) and do not commit the record's offset. The record must be applied
   * once the effect succeeds: rethrow from eachMessage (kafkajs then delivers it again) or retry
   * it yourself.
   */
  applyEffect(record: ConsumedRecord): void;
}

/** A consumer that is running: it keeps consuming until `stop()`. */
export interface RunningConsumer {
  /** Stops consuming and disconnects the consumer. */
  stop(): Promise<void>;
}

/**
 * Starts a consumer of `deps.topic` in group `deps.groupId` that applies every committed record's
 * effect exactly once, across crashes and restarts, and resolves once it is running (no need to
 * wait for the group join).
 */
export type StartConsumer = (deps: ConsumerDeps) => Promise<RunningConsumer>;
