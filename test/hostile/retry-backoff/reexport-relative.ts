// Attack: re-exports the reference solution through a relative path.
// @expect error
export { retry } from "../../../solutions/08-resilience/retry-backoff/retry.ts";
