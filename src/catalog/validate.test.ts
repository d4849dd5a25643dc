import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadCourse } from "./load.ts";
import { validateMeta } from "./validate.ts";

const good = {
  id: "demo-one",
  title: "Demo",
  topic: "demo",
  difficulty: "beginner",
  brokers: ["sqlite"],
  seed: "S7",
  entry: "demo.ts",
  timeoutMs: 5000,
  hints: ["one", "two"],
  quiz: [{ question: "q?", choices: ["a", "b"], answer: 1, explanation: "because" }],
};

describe("validateMeta", () => {
  it("accepts a complete exercise", () => {
    expect(validateMeta(good).errors).toEqual([]);
  });
  it("names each broken field", () => {
    const { errors } = validateMeta({ ...good, brokers: ["mqtt"], seed: "S21", quiz: [{ question: "q", choices: ["a"], answer: 3, explanation: "" }], extra: 1 });
    expect(errors.join("\n")).toMatch(/"brokers" has "mqtt"/);
    expect(errors.join("\n")).toMatch(/"seed" must match/);
    expect(errors.join("\n")).toMatch(/"quiz\[0\]".choices/);
    expect(errors.join("\n")).toMatch(/"extra" is not a known field/);
  });
});

describe("loadCourse", () => {
  it("names the file and the field of a broken exercise", () => {
    const root = mkdtempSync(join(tmpdir(), "msglab-catalog-"));
    mkdirSync(join(root, "ex", "01-demo", "demo-one"), { recursive: true });
    writeFileSync(join(root, "ex", "course.json"), JSON.stringify(["01-demo/demo-one"]));
    writeFileSync(join(root, "ex", "01-demo", "demo-one", "exercise.json"), JSON.stringify({ ...good, difficulty: "hard" }));
    expect(() => loadCourse(join(root, "ex"), join(root, "sol"))).toThrow(/01-demo\/demo-one\/exercise\.json: "difficulty" must be one of/);
  });
  it("loads the real course in order, every exercise complete", () => {
    const course = loadCourse();
    expect(course.length).toBeGreaterThan(0);
    course.forEach((ex, i) => expect(ex.order).toBe(i + 1));
  });
});
