import { resolve } from "node:path";
import { usageError } from "./errors.ts";

/** Where the brokers are and where the learner works. Flags win over environment variables. */
export interface LabConfig {
  amqpUrl: string;
  kafkaBrokers: string[];
  workspace: string;
}

export interface ConfigFlags {
  amqpUrl?: string | undefined;
  kafkaBrokers?: string | undefined;
  workspace?: string | undefined;
}

export const DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672";
export const DEFAULT_KAFKA_BROKERS = "127.0.0.1:9092";

export function loadConfig(flags: ConfigFlags = {}, env: NodeJS.ProcessEnv = process.env): LabConfig {
  const amqpUrl = flags.amqpUrl ?? env.MSGLAB_AMQP_URL ?? DEFAULT_AMQP_URL;
  if (!/^amqps?:\/\//.test(amqpUrl)) {
    throw usageError(`The AMQP URL "${amqpUrl}" must start with amqp:// or amqps:// (set --amqp-url or MSGLAB_AMQP_URL).`);
  }
  const brokers = (flags.kafkaBrokers ?? env.MSGLAB_KAFKA_BROKERS ?? DEFAULT_KAFKA_BROKERS)
    .split(",")
    .map((b) => b.trim())
    .filter(Boolean);
  for (const b of brokers) {
    if (!/^[^:\s]+:\d+$/.test(b)) {
      throw usageError(`The Kafka broker "${b}" must look like host:port (set --kafka-brokers or MSGLAB_KAFKA_BROKERS).`);
    }
  }
  const workspace = resolve(flags.workspace ?? env.MSGLAB_WORKSPACE ?? "msglab-workspace");
  return { amqpUrl, kafkaBrokers: brokers, workspace };
}

/** host and port of an AMQP URL, for messages and TCP probes. */
export function amqpHostPort(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname || "127.0.0.1", port: Number(u.port || (u.protocol === "amqps:" ? 5671 : 5672)) };
}
