// Attack: SIGKILLs its parent process (and, failing that, every process it can name).
// @expect fail|error
import type { Retry } from "msglab/contracts/retry-backoff";

export const retry: Retry = async () => {
  let hits = 0;
  for (const pid of [process.ppid, 1, process.ppid - 1, process.ppid + 1]) {
    try {
      process.kill(pid, "SIGKILL");
      hits++;
    } catch {
      // refused
    }
  }
  throw new Error(`killed ${hits}`);
};
