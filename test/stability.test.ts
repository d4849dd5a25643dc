/**
 * Every reference passes ten gradings in a row, each with a different seed, and keeps passing
 * with three gradings running at once (the way classroom grading runs them): a grader that fails
 * a correct solution now and then, or only on an idle machine, is as useless as a flaky test.
 * STABILITY_REPEAT and STABILITY_CONCURRENT_REPEAT set the repeats (default 10 alone, then 3 in
 * each of the three concurrent gradings: the release check). CI runs 5 and 2, to stay well under its
 * time limit; every seed is still new on every run, so repeated CI runs keep sampling new ones.
 */
import { describe, expect, it } from "vitest";
import { loadCourse } from "../src/catalog/load.ts";
import type { RunResult } from "../src/grading/result.ts";
import { msglab } from "./support/cli.ts";

const REPEAT = Number(process.env.STABILITY_REPEAT ?? 10);
const CONCURRENT = Number(process.env.STABILITY_CONCURRENT_REPEAT ?? 3);
const only = process.env.MSGLAB_EXERCISES?.split(",").map((s) => s.trim());

async function repeat(id: string, file: string, n: number): Promise<string[]> {
  const r = await msglab(["run", id, "--file", file, "--repeat", String(n), "--json"]);
  const report = JSON.parse(r.stdout) as { passed: number; runs: RunResult[] };
  return report.runs
    .filter((x) => x.status !== "pass")
    .map((x) => `seed ${x.seed}: ${x.tests.filter((c) => c.status !== "pass").map((c) => `${c.name}: ${c.message}`).join("; ")}`);
}

describe(`each reference passes --repeat ${REPEAT}, and ${CONCURRENT} more with three gradings at once`, () => {
  for (const ex of loadCourse().filter((e) => !only || only.includes(e.id))) {
    it(ex.id, { timeout: (REPEAT + 3 * CONCURRENT) * ex.timeoutMs }, async () => {
      const alone = await repeat(ex.id, ex.solutionPath, REPEAT);
      expect(alone, alone.join("\n")).toEqual([]);
      const together = (await Promise.all([0, 1, 2].map(() => repeat(ex.id, ex.solutionPath, CONCURRENT)))).flat();
      expect(together, together.join("\n")).toEqual([]);
    });
  }
});
