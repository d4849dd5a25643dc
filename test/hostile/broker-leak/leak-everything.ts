// Attack: declares queues and exchanges under names of its own, creates Kafka topics and a group, and tries the broker's default vhost with guest/guest and other local services directly.
// @expect fail
import net from "node:net";
import amqp from "amqplib";
import type { Channel } from "amqplib";
import type { Kafka } from "kafkajs";

function tcp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  });
}

export async function leak(ch: Channel, kafka: Kafka): Promise<string> {
  const did: string[] = [];
  await ch.assertQueue("hostile-durable-queue", { durable: true });
  await ch.assertExchange("hostile-exchange", "fanout", { durable: true });
  did.push("declared in its vhost");
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: "hostile-topic", numPartitions: 1 }] });
  await admin.disconnect();
  did.push("created a topic");
  try {
    const c = await amqp.connect("amqp://guest:guest@127.0.0.1:5672/", { timeout: 2000 });
    const ch2 = await c.createChannel();
    await ch2.assertQueue("hostile-default-vhost-queue", { durable: true });
    await c.close();
    did.push("DEFAULT VHOST");
  } catch {
    // no route
  }
  for (const port of [5432, 6379, 3306]) if (await tcp(port)) did.push(`reached ${port}`);
  return did.join(", ");
}
