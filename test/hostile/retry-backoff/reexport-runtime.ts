// Attack: finds the lab through import.meta.resolve("amqplib") and the environment at run time, and imports the reference from there.
// @expect fail|error
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Retry } from "msglab/contracts/retry-backoff";

async function findReference(): Promise<Retry | null> {
  const candidates: string[] = [];
  try {
    let dir = dirname(fileURLToPath(import.meta.resolve("amqplib")));
    for (let i = 0; i < 8; i++, dir = dirname(dir)) candidates.push(join(dir, "solutions", "08-resilience", "retry-backoff", "retry.ts"));
  } catch {
    // no resolve
  }
  const cfg = process.env.MSGLAB_CHILD_CONFIG;
  if (cfg) candidates.push(String(JSON.parse(cfg).submissionPath));
  candidates.push("/work/main/solutions/08-resilience/retry-backoff/retry.ts");
  for (const c of candidates) {
    try {
      if (!existsSync(c)) continue;
      const mod = (await import(c)) as { retry?: Retry };
      if (mod.retry) return mod.retry;
    } catch {
      // refused
    }
  }
  return null;
}

export const retry: Retry = async (op, options, clock) => {
  const ref = await findReference();
  if (!ref) throw new Error("no reference found");
  return ref(op, options, clock);
};
