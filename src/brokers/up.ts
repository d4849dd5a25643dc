import type { LabConfig } from "../config.ts";
import { MsglabError } from "../errors.ts";
import { redact } from "../kit/rabbit.ts";
import { composeUp } from "./docker.ts";
import { startNativeKafka } from "./kafka-native.ts";
import { probeKafka, probeRabbit } from "./probe.ts";
import { rabbitInstalled, startNativeRabbit } from "./rabbit-native.ts";
import { readState, writeState } from "./state.ts";
import { dockerEngineAnswers } from "./tools.ts";

export type NeededBroker = "rabbitmq" | "kafka";

export interface UpReport {
  broker: NeededBroker;
  how: "reused" | "native" | "docker";
  where: string;
  ms: number;
}

const isLocal = (host: string) => ["127.0.0.1", "localhost", "::1", "[::1]"].includes(host);

/**
 * Makes each broker answer: reuse a reachable one; else Docker Compose when an engine answers;
 * else the native binaries. Idempotent: a second call finds everything reachable and starts nothing.
 */
export async function up(config: LabConfig, brokers: NeededBroker[], log: (s: string) => void): Promise<UpReport[]> {
  const reports: UpReport[] = [];
  const state = readState();
  let docker: boolean | undefined;
  const useDocker = () => (docker ??= dockerEngineAnswers());

  for (const broker of brokers) {
    const started = performance.now();
    const where = broker === "rabbitmq" ? redact(config.amqpUrl) : config.kafkaBrokers.join(",");
    const probe = () => (broker === "rabbitmq" ? probeRabbit(config.amqpUrl, 2000) : probeKafka(config.kafkaBrokers, 2000));
    const problem = await probe();
    const report = (how: UpReport["how"]) => reports.push({ broker, how, where, ms: Math.round(performance.now() - started) });
    if (problem === null) {
      report("reused");
      continue;
    }
    const host = broker === "rabbitmq" ? new URL(config.amqpUrl).hostname : config.kafkaBrokers[0]!.split(":")[0]!;
    if (!isLocal(host)) throw new MsglabError(`${problem}\nIt is configured on another host (${host}), so \`msglab up\` cannot start it here; ask whoever runs it.`);

    if (useDocker()) {
      log(`starting ${broker} with Docker Compose…`);
      composeUp([broker]);
      await waitUntil(probe, 120_000, `${broker} (Docker) did not answer within 120 s: see \`docker compose logs ${broker}\`.`);
      state[broker] = "docker";
      report("docker");
    } else if (broker === "rabbitmq") {
      if (!rabbitInstalled()) {
        throw new MsglabError(`${problem}\nNo Docker engine answers and RabbitMQ is not installed: run \`sudo apt-get install rabbitmq-server\` (or start Docker), then \`msglab up\`.`);
      }
      log("starting RabbitMQ (rabbitmq-server -detached)…");
      await startNativeRabbit(config.amqpUrl);
      state.rabbitmq = "native";
      report("native");
    } else {
      log("starting Kafka natively (KRaft, Java)…");
      await startNativeKafka(config.kafkaBrokers[0]!, log);
      state.kafka = "native";
      report("native");
    }
    writeState(state);
  }
  return reports;
}

async function waitUntil(probe: () => Promise<string | null>, ms: number, message: string): Promise<void> {
  const until = Date.now() + ms;
  while ((await probe()) !== null) {
    if (Date.now() > until) throw new MsglabError(message);
    await new Promise((r) => setTimeout(r, 500));
  }
}
