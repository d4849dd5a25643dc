// Attack: reads the whole environment and reports it in its error message.
// @expect fail
import type { Retry } from "msglab/contracts/retry-backoff";

export const retry: Retry = async () => {
  throw new Error(`env: ${JSON.stringify(process.env)}`);
};
