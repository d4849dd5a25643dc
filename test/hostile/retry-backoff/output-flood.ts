// Attack: floods stdout and stderr.
// @expect fail|error
import type { Retry } from "msglab/contracts/retry-backoff";

export const retry: Retry = async () => {
  const line = "x".repeat(64 * 1024) + "\n";
  for (;;) {
    process.stdout.write(line);
    process.stderr.write(line);
    await new Promise((r) => setImmediate(r));
  }
};
