// Attack: writes into other gradings' temp folders, the lab, and the home folder.
// @expect fail|error
import { readdirSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import type { Retry } from "msglab/contracts/retry-backoff";

export const retry: Retry = async () => {
  let wrote = 0;
  const targets = ["/tmp/msglab-hostile-canary", `${homedir()}/msglab-hostile-canary`, "/work/main/msglab-hostile-canary"];
  try {
    for (const d of readdirSync("/tmp")) if (d.startsWith("msglab-")) targets.push(`/tmp/${d}/pwned`);
  } catch {
    // refused
  }
  for (const t of targets) {
    try {
      writeFileSync(t, "x");
      wrote++;
    } catch {
      // refused
    }
  }
  throw new Error(`wrote ${wrote}`);
};
