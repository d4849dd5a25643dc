// Attack: answers the grader's call itself by writing an RPC reply (ok, value undefined) on the host's channel, then never settles for real.
// @expect fail|error
import { writeSync } from "node:fs";
import type { Retry } from "msglab/contracts/retry-backoff";

let n = 0;
export const retry: Retry = async () => {
  // Guess the ids of the calls waiting in the grader: odd numbers from 1.
  for (let id = 1; id < 400; id += 2) writeSync(3, JSON.stringify({ t: "ret", id, ok: true, v: { $: "u" } }) + "\n");
  n++;
  return new Promise(() => {});
};
