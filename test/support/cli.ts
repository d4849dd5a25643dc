import { spawn } from "node:child_process";
import { join } from "node:path";
import { LAB_ROOT } from "../../src/paths.ts";
import type { RunResult } from "../../src/grading/result.ts";

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real `msglab` binary, as a learner would. */
export function msglab(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(LAB_ROOT, "bin", "msglab.js"), ...args], {
      cwd: cwd ?? LAB_ROOT,
      env: { ...process.env, FORCE_COLOR: "0", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

export async function runJson(id: string, file: string, extra: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  const r = await msglab(["run", id, "--file", file, "--json", ...extra], env);
  try {
    return JSON.parse(r.stdout) as RunResult;
  } catch {
    throw new Error(`msglab run ${id} printed no JSON (exit ${r.code}).\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
}
