// Records how long the whole suite took, for `npm run bench` (its time per exercise row).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Reporter } from "vitest/reporters";
import { LAB_ROOT } from "../../src/paths.ts";

export default class TimingReporter implements Reporter {
  private started = 0;
  onInit(): void {
    this.started = performance.now();
  }
  onTestRunEnd(): void {
    // Only whole-suite runs are worth recording: a filtered run would flatter the numbers.
    if (process.argv.slice(2).some((a) => /\.test\.ts$|^-t$|--testNamePattern/.test(a)) || process.env.MSGLAB_EXERCISES) return;
    mkdirSync(join(LAB_ROOT, ".bench"), { recursive: true });
    writeFileSync(join(LAB_ROOT, ".bench", "suite-timing.json"), JSON.stringify({ totalMs: Math.round(performance.now() - this.started), at: new Date().toISOString(), node: process.version }));
  }
}
