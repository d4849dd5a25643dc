// Attack: re-exports the reference through the lab's own package name.
// @expect error
export { retry } from "msglab/../solutions/08-resilience/retry-backoff/retry.ts";
