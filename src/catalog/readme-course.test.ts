/**
 * The README's course table is what a visitor reads before installing: it must list the course
 * as `exercises/course.json` has it, in order, each with the seed question its exercise.json
 * names, and its coverage count must be the number of distinct questions answered.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LAB_ROOT } from "../paths.ts";
import { loadCourse } from "./load.ts";

const readme = readFileSync(join(LAB_ROOT, "README.md"), "utf8");
const rows = [...readme.matchAll(/^\| (\d+) \| `([a-z0-9-]+)` \| (S\d+)\b/gm)].map((m) => ({ n: Number(m[1]), id: m[2]!, seed: m[3]! }));

describe("the README's course table", () => {
  it("lists every exercise of the course, in order, with its seed question", () => {
    const course = loadCourse();
    expect(rows.map((r) => r.id)).toEqual(course.map((e) => e.id));
    expect(rows.map((r) => r.n)).toEqual(course.map((_, i) => i + 1));
    expect(rows.map((r) => r.seed)).toEqual(course.map((e) => e.seed));
  });

  it("states the seed coverage the course has", () => {
    const seeds = new Set(loadCourse().map((e) => e.seed));
    const m = /Seed coverage: (\d+) of 20 questions/.exec(readme);
    expect(m, "README needs a 'Seed coverage: N of 20 questions' line").not.toBeNull();
    expect(Number(m![1])).toBe(seeds.size);
  });
});
