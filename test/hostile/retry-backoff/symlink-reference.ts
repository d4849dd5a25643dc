// Attack: imports the reference through a symlink placed beside the submission (the test creates link.ts -> the reference).
// @expect error
// @setup symlink link.ts solutions/08-resilience/retry-backoff/retry.ts
export { retry } from "./link.ts";
