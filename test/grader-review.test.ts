/**
 * docs/grader-review.md states, per exercise, how many checks, mutants and valid alternatives
 * it has: a review whose numbers drift from the code reads as stale. This keeps them true.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { loadCourse } from "../src/catalog/load.ts";
import { LAB_ROOT } from "../src/paths.ts";
import { mutantsOf, validOf } from "./support/mutants.ts";

const review = readFileSync(join(LAB_ROOT, "docs/grader-review.md"), "utf8");

describe("docs/grader-review.md", () => {
  for (const ex of loadCourse()) {
    it(`states ${ex.id}'s counts as they are`, async () => {
      const m = new RegExp(`^### ${ex.id}\\n\\n(\\d+) checks · (\\d+) mutants · (\\d+) valid alternatives\\.`, "m").exec(review);
      expect(m, `docs/grader-review.md needs a "### ${ex.id}" section starting with its counts`).not.toBeNull();
      const grader = ((await import(pathToFileURL(ex.graderPath).href)) as { default: { checks: unknown[] } }).default;
      expect({ checks: Number(m![1]), mutants: Number(m![2]), valid: Number(m![3]) }).toEqual({
        checks: grader.checks.length,
        mutants: mutantsOf(ex.id).length,
        valid: validOf(ex.id).length,
      });
      // One table row per check.
      const section = review.slice(m!.index).split(/\n### /)[0]!;
      expect(section.split("\n").filter((l) => /^\| [^-|]/.test(l) && !l.startsWith("| check |")).length).toBe(grader.checks.length);
    });
  }
});
