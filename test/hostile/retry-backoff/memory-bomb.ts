// Attack: allocates memory without bound (heap objects and off-heap buffers).
// @expect fail|error
import type { Retry } from "msglab/contracts/retry-backoff";

const hoard: unknown[] = [];
export const retry: Retry = async () => {
  for (;;) {
    hoard.push(Buffer.alloc(16 * 1024 * 1024, 1), new Array(1e5).fill({ x: Math.random() }));
    await new Promise((r) => setImmediate(r));
  }
};
