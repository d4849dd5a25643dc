// Attack: starts a detached grandchild (and a worker thread) that would outlive the run.
// @expect fail|error
import { spawn } from "node:child_process";
import { Worker } from "node:worker_threads";
import type { Retry } from "msglab/contracts/retry-backoff";

export const retry: Retry = async (op) => {
  const problems: string[] = [];
  try {
    const c = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { detached: true, stdio: "ignore" });
    c.unref();
  } catch (e) {
    problems.push(String(e));
  }
  try {
    new Worker("setInterval(() => {}, 1000)", { eval: true }).unref();
  } catch (e) {
    problems.push(String(e));
  }
  if (problems.length) throw new Error(problems.join("; "));
  return op(1, undefined);
};
