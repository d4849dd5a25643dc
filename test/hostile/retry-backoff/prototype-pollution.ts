// Attack: pollutes Object.prototype (a `then` on every object, a `$` tag) to confuse the RPC layer into reporting a result.
// @expect fail|error
import type { Retry } from "msglab/contracts/retry-backoff";

Object.defineProperty(Object.prototype, "then", {
  value(resolve: (v: unknown) => void) {
    resolve({ status: "pass" });
  },
  configurable: true,
  writable: true,
});
(Object.prototype as Record<string, unknown>).$ = "ref";

export const retry: Retry = async () => ({ status: "pass" }) as never;
