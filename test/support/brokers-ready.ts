// Broker tests never skip: the suite starts what is missing, as `msglab up` does (so `npm test`
// works on its own, after a reboot too), and if a broker still does not answer, the whole run
// fails here and says which and how to fix it.
import { up } from "../../src/brokers/up.ts";
import { probeKafka, probeRabbit } from "../../src/brokers/probe.ts";
import { loadConfig } from "../../src/config.ts";

export default async function setup(): Promise<void> {
  const config = loadConfig();
  try {
    await up(config, ["rabbitmq", "kafka"], (line) => console.log(`[msglab up] ${line}`));
  } catch (e) {
    throw new Error(`The tests need real brokers, and \`msglab up\` could not start them:\n${(e as Error).message}`);
  }
  const problems = (await Promise.all([probeRabbit(config.amqpUrl), probeKafka(config.kafkaBrokers)])).filter(Boolean);
  if (problems.length) throw new Error(`The tests need real brokers.\n${problems.join("\n")}`);
}
