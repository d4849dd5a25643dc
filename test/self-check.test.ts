/**
 * The course's own proof, for every exercise in the course list: the reference passes, the
 * untouched scaffold fails, every mutant in test/mutants/<slug>/ fails on the checks it
 * targets, and every valid alternative in test/valid/<slug>/ passes. A grader that passes a
 * wrong solution is the worst bug this project can have; one that rejects a correct design is
 * the second worst.
 *
 * A mutant is graded on its targets alone (`--only`): that is the claim, and it keeps the
 * suite fast. The reference and the alternatives are graded on every check.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { loadCourse } from "../src/catalog/load.ts";
import { loadConfig } from "../src/config.ts";
import { gradeSubmission } from "../src/grading/engine.ts";
import type { RunResult } from "../src/grading/result.ts";
import { mutantsOf, validOf } from "./support/mutants.ts";

const config = loadConfig();

function explain(r: RunResult): string {
  return r.checks.map((c) => `${c.status} ${c.name}${c.message ? `: ${c.message}` : ""}`).join("\n") + `\n(seed ${r.seed})`;
}

// MSGLAB_EXERCISES=a,b narrows the proof to some exercises (the Node 24 subset in .ci/run).
const only = process.env.MSGLAB_EXERCISES?.split(",").map((s) => s.trim());
for (const ex of loadCourse().filter((e) => !only || only.includes(e.id))) {
  describe(ex.id, () => {
    it("the reference solution passes", async () => {
      const r = await gradeSubmission(ex, ex.solutionPath, { config });
      expect(r.status, explain(r)).toBe("pass");
      expect(r.score).toBe(r.maxScore);
    });

    it("the untouched scaffold fails (not errors) and carries TODO markers", async () => {
      expect(readFileSync(ex.scaffoldPath, "utf8")).toMatch(/\/\/ TODO/);
      const r = await gradeSubmission(ex, ex.scaffoldPath, { config });
      expect(r.status, explain(r)).toBe("fail");
    });

    const mutants = mutantsOf(ex.id);
    it("has at least three mutants, each naming the checks it targets", () => {
      expect(mutants.length).toBeGreaterThanOrEqual(3);
      for (const m of mutants) {
        expect(m.models, `${m.file} needs a "// Mutant: …" line`).not.toBe("");
        expect(m.targets.length, `${m.file} needs a "// @targets <check>" line`).toBeGreaterThan(0);
      }
    });

    const valid = validOf(ex.id);
    it("has at least two valid alternatives, each saying how its design differs", () => {
      expect(valid.length).toBeGreaterThanOrEqual(2);
      for (const v of valid) expect(v.design, `${v.file} needs a "// Valid: …" line`).not.toBe("");
    });
    for (const v of valid) {
      it(`passes valid alternative ${v.name}: ${v.design}`, async () => {
        const r = await gradeSubmission(ex, v.file, { config });
        expect(r.status, explain(r)).toBe("pass");
      });
    }

    for (const m of mutants) {
      it(`rejects mutant ${m.name}: ${m.models}`, async () => {
        const r = await gradeSubmission(ex, m.file, { config, only: m.targets });
        expect(r.status, explain(r)).toBe("fail");
        for (const target of m.targets) {
          const c = r.checks.find((x) => x.name === target);
          expect(c, `${m.name} targets "${target}", which is not a check of ${ex.id}`).toBeDefined();
          expect(c!.status, `${m.name} must fail "${target}"\n${explain(r)}`).toBe("fail");
        }
      });
    }
  });
}
