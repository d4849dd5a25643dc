import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { MsglabError } from "../errors.ts";
import { LAB_ROOT } from "../paths.ts";

const COMPOSE = join(LAB_ROOT, "docker-compose.yml");

export function composeUp(services: string[]): void {
  const res = spawnSync("docker", ["compose", "-f", COMPOSE, "up", "-d", ...services], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  if (res.status !== 0) throw new MsglabError(`\`docker compose up -d ${services.join(" ")}\` failed:\n${(res.stderr || res.stdout).trim()}`);
}

export function composeStop(services: string[]): void {
  spawnSync("docker", ["compose", "-f", COMPOSE, "stop", ...services], { encoding: "utf8" });
}
