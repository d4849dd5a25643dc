// Publisher confirms: publish() resolves only once the broker has taken the message.
// Read README.md for the contract; `msglab run publisher-confirms` grades this file.
import type { ChannelModel } from "amqplib";
import type { Publisher } from "msglab/contracts/publisher-confirms";

/**
 * Declares `exchange` (a durable topic exchange) and returns a publisher for it.
 *
 * publish(routingKey, event) sends JSON.stringify(event) to the exchange as a persistent
 * message with contentType "application/json", a new unique messageId and a timestamp in
 * whole seconds, and resolves to { messageId } only once the broker has confirmed THAT
 * message. It rejects if the broker nacks it or the channel closes before its confirm.
 * close() closes the publisher's channel(s), never the connection.
 */
export async function createPublisher(connection: ChannelModel, exchange: string): Promise<Publisher> {
  // TODO: open a channel on `connection` on which the broker answers every publish with an
  //       ack or a nack. (A channel from createChannel() never hears back.)
  // TODO: declare `exchange`: topic, durable, before this function resolves.
  // TODO: return { publish, close }:
  //       - publish: a new id (node:crypto has randomUUID), the message options from the
  //         contract, and a Promise that settles when the broker answers for this message.
  //       - close: close what you opened, and nothing else.
  throw new Error("TODO: createPublisher");
}
