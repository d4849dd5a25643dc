import { describe, expect, it } from "vitest";
import { VirtualClock } from "./clock.ts";

describe("VirtualClock", () => {
  it("wakes sleepers in order when time advances, exactly", async () => {
    const clock = new VirtualClock();
    const woke: number[] = [];
    void clock.sleep(300).then(() => woke.push(clock.now()));
    void clock.sleep(100).then(() => woke.push(clock.now()));
    await clock.advance(99);
    expect(woke).toEqual([]);
    await clock.advance(1000);
    expect(woke).toEqual([100, 300]);
    expect(clock.now()).toBe(1099);
  });

  it("auto-advances and records every sleep", async () => {
    const clock = new VirtualClock();
    clock.autoAdvance();
    await clock.sleep(200);
    await clock.sleep(400);
    expect(clock.sleeps.map((s) => s.ms)).toEqual([200, 400]);
    expect(clock.now()).toBe(600);
  });

  it("rejects a sleep when its signal aborts", async () => {
    const clock = new VirtualClock();
    const ac = new AbortController();
    const p = clock.sleep(1000, ac.signal);
    ac.abort(new Error("stop"));
    await expect(p).rejects.toThrow("stop");
    expect(clock.pending).toBe(0);
  });
});
