import { spawnSync } from "node:child_process";
import { MsglabError } from "../errors.ts";
import { probeRabbit } from "./probe.ts";
import { which } from "./tools.ts";

export function rabbitInstalled(): boolean {
  return which("rabbitmq-server") !== null;
}

/** `rabbitmq-server -detached`, then wait for a real AMQP round trip. */
export async function startNativeRabbit(url: string): Promise<void> {
  const res = spawnSync("rabbitmq-server", ["-detached"], { encoding: "utf8", timeout: 30_000 });
  if (res.status !== 0) throw new MsglabError(`\`rabbitmq-server -detached\` failed:\n${(res.stderr || res.stdout).trim()}`);
  const until = Date.now() + 90_000;
  for (;;) {
    if ((await probeRabbit(url, 1500)) === null) return;
    if (Date.now() > until) throw new MsglabError("RabbitMQ did not answer within 90 s of `rabbitmq-server -detached`. See /var/log/rabbitmq/.");
    await new Promise((r) => setTimeout(r, 300));
  }
}

export function stopNativeRabbit(): boolean {
  const res = spawnSync("rabbitmqctl", ["shutdown"], { encoding: "utf8", timeout: 60_000 });
  return res.status === 0;
}
