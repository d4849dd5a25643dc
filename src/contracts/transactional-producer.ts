import type { Kafka } from "kafkajs";

/** One record of a batch: where it goes and what it carries. */
export interface OutgoingMessage {
  /** The topic to write to. One batch may span several topics. */
  topic: string;
  /**
   * The record key, sent as given. Keys choose partitions: the record goes where Kafka's default
   * partitioner puts this key (murmur2 of its UTF-8 bytes, modulo the partition count, as the Java
   * client and kafkajs's default do). Set no partition and no other partitioner.
   */
  key: string;
  /** The record value, written as-is. */
  value: string;
}

/** Optional callbacks the caller can hand to `publish()`. */
export interface PublishHooks {
  /**
   * Called once per message, in batch order, right before that message is sent:
   * `await beforeSend(message, i)`, then send message `i` and await the send, then go on to
   * `i + 1`. It stands for the work an application does between two writes (computing the
   * next record, reading it from somewhere); it may take time, and it may throw. When it
   * throws, the batch has failed exactly as if a send had failed.
   */
  beforeSend?(message: OutgoingMessage, index: number): void | Promise<void>;
}

/** A publisher that writes a batch to one or more topics as one Kafka transaction. */
export interface TransactionalPublisher {
  /**
   * Writes every message of `messages`, in order, inside ONE transaction, and commits it, whatever
   * the batch's size (hundreds of messages are still one transaction) and however many topics it
   * spans. Resolves only once the transaction is committed. If anything fails on the way (a send,
   * `beforeSend`), aborts the transaction, waits for the abort, and rejects. Once another
   * publisher with the same transactional id (in this process or any other) has fenced this one,
   * the call in flight and every later call reject: a fenced publisher never resolves.
   */
  publish(messages: OutgoingMessage[], hooks?: PublishHooks): Promise<void>;
  /** Disconnects the producer. */
  close(): Promise<void>;
}

/**
 * Builds a publisher on the given kafkajs client (the caller owns its brokers and timeouts),
 * with an idempotent producer that uses exactly `transactionalId`, and connects it. The id is the
 * publisher's identity across processes: a publisher in another process given the same id fences
 * this one, and this one fences it. Use it as given; derive nothing from the pid, a random value
 * or the time.
 */
export type CreateTransactionalPublisher = (kafka: Kafka, transactionalId: string) => Promise<TransactionalPublisher>;
