/**
 * Every reference passes ten gradings in a row, each with a different seed: a grader that
 * fails a correct solution now and then is as useless to a learner as a flaky test.
 */
import { describe, expect, it } from "vitest";
import { loadCourse } from "../src/catalog/load.ts";
import type { RunResult } from "../src/grading/result.ts";
import { msglab } from "./support/cli.ts";

const REPEAT = 10;

describe(`each reference passes --repeat ${REPEAT}`, () => {
  for (const ex of loadCourse()) {
    it(ex.id, { timeout: REPEAT * ex.timeoutMs }, async () => {
      const r = await msglab(["run", ex.id, "--file", ex.solutionPath, "--repeat", String(REPEAT), "--json"]);
      const report = JSON.parse(r.stdout) as { passed: number; runs: RunResult[] };
      const failures = report.runs
        .filter((x) => x.status !== "pass")
        .map((x) => `seed ${x.seed}: ${x.checks.filter((c) => c.status !== "pass").map((c) => `${c.name}: ${c.message}`).join("; ")}`);
      expect(failures, failures.join("\n")).toEqual([]);
      expect(report.passed).toBe(REPEAT);
    });
  }
});
