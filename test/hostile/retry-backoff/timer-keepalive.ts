// Attack: leaves intervals and an unref'd-never socket running so its process outlives the check.
// @expect fail|error
import type { Retry } from "msglab/contracts/retry-backoff";

export const retry: Retry = async (op) => {
  setInterval(() => {}, 10);
  process.on("SIGTERM", () => {});
  process.on("exit", () => {
    for (;;) {
      // never exit
    }
  });
  return op(1, undefined);
};
