// Publisher confirms: publish() resolves only once the broker has taken the message.
// Read README.md for the contract; `msglab run publisher-confirms` grades this file.
import type { ChannelModel } from "amqplib";
import type { Publisher, PublisherOptions } from "msglab/contracts/publisher-confirms";

/**
 * Declares `exchange` (a durable topic exchange) and returns a publisher for it.
 *
 * publish(routingKey, event) sends JSON.stringify(event) to the exchange as a persistent
 * message with contentType "application/json", a new unique messageId and a timestamp in
 * whole seconds, and resolves to { messageId } only once the broker has confirmed THAT
 * message. It rejects if the broker nacks it, if the channel closes before its confirm (at
 * once), or if no confirm came within options.confirmTimeoutMs of the call (default
 * DEFAULT_CONFIRM_TIMEOUT_MS, 10 s, from the contract); never earlier, and never by resolving.
 * close() closes the publisher's channel(s), never the connection.
 */
export async function createPublisher(connection: ChannelModel, exchange: string, options: PublisherOptions = {}): Promise<Publisher> {
  // TODO: open a channel on `connection` on which the broker answers every publish with an
  //       ack or a nack. (A channel from createChannel() never hears back.)
  // TODO: declare `exchange`: topic, durable, before this function resolves.
  // TODO: return { publish, close }:
  //       - publish: a new id (node:crypto has randomUUID), the message options from the
  //         contract, and a Promise that settles when the broker answers for this message,
  //         or rejects when its deadline (options.confirmTimeoutMs) passes first.
  //       - close: close what you opened, and nothing else.
  void options;
  throw new Error("TODO: createPublisher");
}
