/**
 * Contract for the at-least-once-consumer exercise (01-foundations/at-least-once-consumer).
 *
 * The learner exports, from `consumer.ts`:
 *
 * ```ts
 * declareQueue(ch: Channel, queue: string): Promise<void>
 * startConsumer(deps: ConsumerDeps): Promise<RunningConsumer>
 * ```
 *
 * The consumer runs in a sandboxed process of its own that the grader can SIGKILL at an exact
 * point (while a payment is being applied, right after the transaction holding its ledger row
 * commits, or with its ack held on the wire) and then start again on the database as the crash
 * left it. The grader publishes the
 * payments and judges the result from outside: the `ledger` table read on its own SQLite
 * connection, the queue seen from its own RabbitMQ connection, and every frame of your channel
 * on a proxy of the grader's between your process and the broker.
 *
 * The SQLite database handed to `startConsumer` already holds the grader's table:
 *
 * ```sql
 * CREATE TABLE ledger (              -- written only by applyPayment; append-only
 *   seq        INTEGER PRIMARY KEY AUTOINCREMENT,
 *   message_id TEXT NOT NULL,        -- no UNIQUE: a payment applied twice shows as two rows
 *   payment    TEXT NOT NULL,        -- JSON of the payment
 *   run        INTEGER NOT NULL,      -- which process applied it (1, 2, ...)
 *   commit_check INTEGER REFERENCES ledger_commit_check (id) DEFERRABLE INITIALLY DEFERRED
 * );                                  -- (a deferred check: how the grader makes a COMMIT fail)
 * ```
 *
 * Your own tables (the record of processed message ids) go in the same database, with names
 * of your choosing (not `ledger`), written through `deps.db`. Create them in `startConsumer`
 * with `CREATE TABLE IF NOT EXISTS`: a restarted consumer finds them already there. Keep no
 * state anywhere else: no second database, no file of your own beside it (the grader fails a
 * process that leaves one), no record kept on the broker.
 *
 * After a crash the restarted process gets the database as the crash left it: the transactions
 * committed before the crash point, and nothing after. For the crash right after a commit, that
 * is every transaction up to the one holding the payment's ledger row, and none of what your
 * process wrote afterwards (to any table, through any connection); nothing it sent the broker
 * after that payment's `applyPayment` call reaches the broker either.
 */
import type { Channel } from "amqplib";
import type BetterSqlite3 from "better-sqlite3";

/**
 * One payment, the body of one message: exactly `JSON.stringify(payment)` (UTF-8). Bodies are
 * not unique: two deposits of the same amount to the same account are two payments. What
 * identifies a message is its AMQP `messageId` property, which every message carries.
 */
export interface Payment {
  /** The account to credit, e.g. "acct-17". */
  account: string;
  /** The amount in cents, a positive integer. */
  amountCents: number;
}

/**
 * The business effect of one message: it appends the payment to the `ledger` table, writing
 * through the same database handle you get (`deps.db`). So when you call it inside a
 * transaction on `deps.db`, its write is part of that transaction, and commits or rolls back
 * with it. It is not idempotent: called twice, it credits twice. It may throw (the ledger can
 * be temporarily unavailable, several times in a row); then it has written nothing. Its row can
 * also make the COMMIT of your transaction fail (the ledger has deferred checks): then the whole
 * transaction rolls back.
 *
 * @param messageId the AMQP `messageId` of the message being handled (`msg.properties.messageId`)
 * @param payment   `JSON.parse` of the message body
 */
export type ApplyPayment = (messageId: string, payment: Payment) => void;

/** What `startConsumer` receives. The grader opens all of it in your process. */
export interface ConsumerDeps {
  /**
   * A channel on a fresh connection to RabbitMQ. Use only this channel: set the prefetch on it,
   * consume on it, ack on it.
   */
  channel: Channel;
  /** The queue to consume; `declareQueue` has already been called for it. */
  queue: string;
  /**
   * An open better-sqlite3 database (WAL mode, synchronous NORMAL, busy timeout set, foreign
   * keys on) holding the `ledger` table. A restarted process gets the same database, as the
   * crash left it (its file may be at another path).
   */
  db: BetterSqlite3.Database;
  /** The effect to apply, once per message id. See {@link ApplyPayment}. */
  applyPayment: ApplyPayment;
}

/** What `startConsumer` resolves to: a running consumer. */
export interface RunningConsumer {
  /**
   * Cancels the consumer on the broker (no further deliveries) and resolves once every
   * delivery already received has been handled and acked (or nacked). It does not close the
   * channel or the database: the grader ends the process that holds them.
   */
  stop(): Promise<void>;
}

/**
 * Declares the payments queue: durable (it survives a broker restart), not exclusive and not
 * auto-delete (it outlives every consumer, including one that crashed). Classic or quorum.
 * Calling it again for an existing queue must succeed and keep the messages in it.
 */
export type DeclareQueue = (ch: Channel, queue: string) => Promise<void>;

/**
 * The most deliveries that may be in flight (delivered to the consumer and not yet acked) at
 * any moment. Set a prefetch between 1 and this number before you consume.
 */
export const MAX_PREFETCH = 20;

/**
 * Starts consuming `deps.queue` on `deps.channel`:
 * - with manual acks and a prefetch between 1 and {@link MAX_PREFETCH};
 * - for each message: in ONE SQLite transaction on `deps.db`, record its `messageId` as
 *   processed and call `applyPayment` unless that id was processed before (by this process or
 *   an earlier one); then, once the transaction has committed, ack the message. A duplicate
 *   (an id already processed) is acked without applying it again. Message ids are arbitrary
 *   strings (quotes, colons, spaces);
 * - keep the record of processed ids for as long as a duplicate can arrive: here, for good (a
 *   copy may come after hundreds of other payments). Do not prune it to the last N ids;
 * - an ack settles only committed payments: `ack(msg, true)` (allUpTo) and `ackAll()` also
 *   settle every earlier delivery on the channel, so use them only when all of those are
 *   committed too;
 * - if the transaction fails (`applyPayment` throws, or the COMMIT fails), nothing of it was
 *   committed: nack the message with requeue, so it is tried again, as often as it fails. Never
 *   ack it, and never drop it (nack or reject without requeue).
 * Resolves once the consumer is registered on the broker.
 */
export type StartConsumer = (deps: ConsumerDeps) => Promise<RunningConsumer>;

/** The learner's module, as the grader sees it. */
export interface AtLeastOnceConsumerSubmission {
  declareQueue: DeclareQueue;
  startConsumer: StartConsumer;
}
