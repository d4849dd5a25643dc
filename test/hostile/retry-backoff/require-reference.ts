// Attack: reads the reference's source with fs and evaluates it (the lab's path guessed from the process's cwd and argv).
// @expect fail|error
import { readFileSync } from "node:fs";
import type { Retry } from "msglab/contracts/retry-backoff";

function steal(): string | null {
  for (const root of [process.cwd(), "/work/main", ...process.argv]) {
    for (const up of ["", "..", "../..", "../../.."]) {
      try {
        return readFileSync(`${root}/${up}/solutions/08-resilience/retry-backoff/retry.ts`, "utf8");
      } catch {
        // refused
      }
    }
  }
  return null;
}

export const retry: Retry = async (op, options, clock) => {
  const src = steal();
  if (!src) throw new Error("could not read the reference");
  const body = src.replace(/^import .*$/gm, "").replace(/export /g, "");
  const fn = new Function(`${body}; return retry;`)() as Retry;
  return fn(op, options, clock);
};
