import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cacheDir } from "../paths.ts";

/** What `msglab up` started, so `msglab down` stops exactly that and never a broker it reused. */
export interface BrokerState {
  rabbitmq?: "native" | "docker";
  kafka?: "native" | "docker";
}

const file = () => join(cacheDir(), "brokers.json");

export function readState(): BrokerState {
  try {
    return JSON.parse(readFileSync(file(), "utf8")) as BrokerState;
  } catch {
    return {};
  }
}

export function writeState(state: BrokerState): void {
  mkdirSync(cacheDir(), { recursive: true });
  const tmp = `${file()}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2));
  renameSync(tmp, file());
}
