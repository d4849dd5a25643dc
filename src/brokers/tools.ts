import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";

/** Finds a command on PATH without a shell. */
export function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir && existsSync(join(dir, cmd))) return join(dir, cmd);
  }
  return null;
}

/** Java 17+ from JAVA_HOME or PATH. */
export function findJava(): { path: string | null; version: string | null; problem: string | null } {
  const path = process.env.JAVA_HOME && existsSync(join(process.env.JAVA_HOME, "bin", "java")) ? join(process.env.JAVA_HOME, "bin", "java") : which("java");
  if (!path) return { path: null, version: null, problem: "no `java` on PATH." };
  const res = spawnSync(path, ["-version"], { encoding: "utf8" });
  const text = `${res.stderr ?? ""}${res.stdout ?? ""}`;
  const m = /version "(\d+)(?:\.(\d+))?/.exec(text);
  const major = m ? (m[1] === "1" ? Number(m[2]) : Number(m[1])) : 0;
  const version = m ? text.split("\n")[0]!.trim() : null;
  if (major < 17) return { path: null, version, problem: `found ${version ?? "an unknown Java"}, need 17 or newer.` };
  return { path, version, problem: null };
}

export function findMaven(): string | null {
  return which("mvn");
}

/** True when a Docker engine answers (not just the client binary). */
export function dockerEngineAnswers(): boolean {
  if (!which("docker")) return false;
  const res = spawnSync("docker", ["info", "--format", "{{.ServerVersion}}"], { encoding: "utf8", timeout: 5000 });
  return res.status === 0 && Boolean(res.stdout.trim());
}
