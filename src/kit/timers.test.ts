import { describe, expect, it } from "vitest";
import { newTimers, type PendingTimer } from "./timers.ts";

const tm = (kind: PendingTimer["kind"], ms: number, callback = "f"): PendingTimer => ({ kind, ms, callback });

describe("newTimers", () => {
  it("leaves out what was there before, as a multiset, and every interval", () => {
    const before = [tm("timeout", 5000), tm("interval", 100, "heartbeat")];
    const now = [tm("timeout", 5000), tm("timeout", 5000), tm("interval", 100, "heartbeat"), tm("interval", 1000, "sweep"), tm("promise", 300)];
    expect(newTimers(before, now)).toEqual([tm("timeout", 5000), tm("promise", 300)]);
  });

  it("keeps only those of at least minMs, longest first", () => {
    expect(newTimers([], [tm("timeout", 10), tm("timeout", 2000), tm("timeout", 30000)], 1000).map((x) => x.ms)).toEqual([30000, 2000]);
  });
});
