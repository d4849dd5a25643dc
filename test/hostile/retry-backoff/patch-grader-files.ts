// Attack: appends "every check passes" to the kit and the grader in the lab install, so that later gradings pass.
// @expect fail|error
import { appendFileSync, writeFileSync } from "node:fs";
import type { Retry } from "msglab/contracts/retry-backoff";

const targets = ["/work/main/src/kit/grader.ts", "/work/main/exercises/08-resilience/retry-backoff/grader.ts", "/work/main/src/grading/child.ts"];

export const retry: Retry = async () => {
  let wrote = 0;
  for (const t of targets) {
    try {
      appendFileSync(t, "\n// pwned\n");
      wrote++;
    } catch {
      // refused
    }
  }
  try {
    writeFileSync("/tmp/msglab-hostile-canary", "escaped");
  } catch {
    // refused
  }
  throw new Error(`patched ${wrote} files`);
};
