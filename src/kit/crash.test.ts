import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LAB_ROOT } from "../paths.ts";
import { CrashHarness } from "./crash.ts";

const fixtures = join(LAB_ROOT, "test", "fixtures", "kit");

describe("CrashHarness", () => {
  it("SIGKILLs a worker exactly at a checkpoint, and a restart runs again", async () => {
    const harness = new CrashHarness(join(fixtures, "counter.ts"));
    const effects: number[] = [];
    const first = await harness.start(join(fixtures, "counter-worker.ts"), {
      input: { n: 10 },
      onReport: (e) => e.name === "effect" && effects.push(e.data as number),
      onCheckpoint: (e) => (e.data === 3 ? "kill" : "continue"),
    });
    expect(await first.exited).toEqual({ code: null, signal: "SIGKILL" });
    expect(effects).toEqual([1, 2, 3]);

    const second = await harness.start(join(fixtures, "counter-worker.ts"), { input: { n: 2 } });
    await second.waitFor((e) => e.name === "done", 10_000, "the second run's end");
    await harness.killAll();
  });

  it("reaps every worker, even ones blocked at a checkpoint", async () => {
    const harness = new CrashHarness(join(fixtures, "counter.ts"));
    const w = await harness.start(join(fixtures, "counter-worker.ts"), {
      input: { n: 5 },
      // Never answered: the worker stays blocked, as a hung learner process would.
      onCheckpoint: () => "hold",
    });
    await w.waitFor((e) => e.type === "checkpoint", 10_000, "the first checkpoint");
    await harness.killAll();
    expect((await w.exited).signal).toBe("SIGKILL");
    expect(() => process.kill(w.pid, 0)).toThrow();
  });
});
