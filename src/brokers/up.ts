import type { LabConfig } from "../config.ts";
import { MsglabError } from "../errors.ts";
import { redact } from "../kit/rabbit.ts";
import { composeUp } from "./docker.ts";
import { startNativeKafka } from "./kafka-native.ts";
import { probeKafka, probeRabbit } from "./probe.ts";
import { rabbitInstalled, startNativeRabbit } from "./rabbit-native.ts";
import { readState, writeState } from "./state.ts";
import { dockerEngineAnswers, which } from "./tools.ts";
import { managementAvailable } from "./rabbit-admin.ts";
import { spawnSync } from "node:child_process";

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
  if (brokers.includes("rabbitmq")) await ensureManagement(config, log);
  return reports;
}

/**
 * Each grading gets a vhost of its own, made through the management API in a few ms (without
 * it, `rabbitmqctl` takes seconds a grading). On a local broker with `rabbitmq-plugins` at
 * hand, enable the plugin; elsewhere say what is missing.
 */
async function ensureManagement(config: LabConfig, log: (s: string) => void): Promise<void> {
  if (await managementAvailable(config.amqpUrl)) return;
  const host = new URL(config.amqpUrl).hostname;
  if (!isLocal(host) || !which("rabbitmq-plugins")) {
    log("note: RabbitMQ's management API does not answer; gradings fall back to slower vhost handling. Enable it with `rabbitmq-plugins enable rabbitmq_management`.");
    return;
  }
  log("enabling RabbitMQ's management plugin (per-grading vhosts)…");
  spawnSync("rabbitmq-plugins", ["enable", "--quiet", "rabbitmq_management"], { stdio: "ignore", timeout: 60_000 });
  const until = Date.now() + 30_000;
  while (!(await managementAvailable(config.amqpUrl))) {
    if (Date.now() > until) {
      log("note: the management plugin did not answer within 30 s; gradings fall back to rabbitmqctl.");
      return;
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function waitUntil(probe: () => Promise<string | null>, ms: number, message: string): Promise<void> {
  const until = Date.now() + ms;
  while ((await probe()) !== null) {
    if (Date.now() > until) throw new MsglabError(message);
    await new Promise((r) => setTimeout(r, 500));
  }
}
