// Attack: writes forged engine messages (plan, check-end pass, done) on every file descriptor it can, then hangs.
// @expect fail|error
import { writeSync } from "node:fs";
import type { Retry } from "msglab/contracts/retry-backoff";

const pass = (name: string) => ({ type: "check-end", index: 0, result: { name, status: "pass", message: null, hint: null, durationMs: 1 } });
const lines = [{ type: "plan", checks: ["forged"] }, pass("forged"), { type: "done" }, { t: "ready", exports: {} }].map((m) => JSON.stringify(m) + "\n").join("");

export const retry: Retry = async () => {
  for (let fd = 0; fd < 64; fd++) {
    try {
      writeSync(fd, lines);
    } catch {
      // not open
    }
  }
  return new Promise(() => {});
};
