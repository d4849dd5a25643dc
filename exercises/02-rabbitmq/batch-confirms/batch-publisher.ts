// Batch confirms: publish a whole batch, then wait once for the broker's answer to every message.
// Read README.md for the contract; `msglab run batch-confirms` grades this file.
import type { ChannelModel } from "amqplib";
import type { BatchPublisher, BatchPublisherOptions, BatchReceipt, OutgoingMessage } from "msglab/contracts/batch-confirms";

/**
 * Declares `exchange` (a durable topic exchange) and returns a batch publisher for it.
 *
 * publishBatch(messages) publishes every message (persistent, contentType "application/json",
 * messageId from the message, its own routing key, body JSON.stringify(event)) without waiting
 * in between, then waits until the broker has answered for every one of them:
 * - all acked: resolve with { messageIds } (in the order given);
 * - any nacked: reject with an Error whose failedIds lists exactly the nacked messageIds;
 * - the channel closes first, or options.confirmTimeoutMs (default 30 s) passes first: reject,
 *   failedIds listing every message not acked.
 * An empty batch resolves at once. close() closes the publisher's channel(s), never the connection.
 */
export async function createBatchPublisher(connection: ChannelModel, exchange: string, options: BatchPublisherOptions = {}): Promise<BatchPublisher> {
  // TODO: open a channel on which the broker acks or nacks every publish.
  // TODO: declare `exchange`: topic, durable, before this function resolves.
  // TODO: return { publishBatch, close }:
  //       - publishBatch: publish ALL the messages first, keeping which answer each one gets
  //         (its publish callback), then settle once every message has its answer, or the
  //         channel closes, or the deadline passes. Which messages failed?
  //       - close: close what you opened, and nothing else.
  void options;
  throw new Error("TODO: createBatchPublisher");
}

// The types you return, for reference: BatchReceipt is { messageIds: string[] }; a failure is an
// Error with a failedIds: string[] property. OutgoingMessage is { messageId, routingKey, event }.
export type { BatchReceipt, OutgoingMessage };
