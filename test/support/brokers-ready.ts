// Broker tests never skip: if a broker is missing, the whole run fails here and says how to fix it.
import { probeKafka, probeRabbit } from "../../src/brokers/probe.ts";
import { loadConfig } from "../../src/config.ts";

export default async function setup(): Promise<void> {
  const config = loadConfig();
  const problems = (await Promise.all([probeRabbit(config.amqpUrl), probeKafka(config.kafkaBrokers)])).filter(Boolean);
  if (problems.length) throw new Error(`The tests need real brokers.\n${problems.join("\n")}`);
}
