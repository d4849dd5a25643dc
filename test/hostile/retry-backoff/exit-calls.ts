// Attack: ends its own process in every way Node offers (exit, reallyExit, abort).
// @expect fail|error
import type { Retry } from "msglab/contracts/retry-backoff";

let n = 0;
export const retry: Retry = async () => {
  n++;
  if (n % 3 === 1) process.exit(0);
  if (n % 3 === 2) (process as unknown as { reallyExit(c: number): void }).reallyExit(0);
  process.abort();
};
