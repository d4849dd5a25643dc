/**
 * Our results, read as other tools read theirs: each format's own example (test/fixtures/specs,
 * from exercism's test-runner interface and GitHub Classroom's reporter) fixes the fields and
 * their types; a msglab result must have every one of them, of the same type.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LAB_ROOT } from "../../paths.ts";
import { overallStatus, type RunResult } from "../result.ts";
import { classroomOutputLine, toClassroom } from "./github-classroom.ts";

const spec = (name: string) => JSON.parse(readFileSync(join(LAB_ROOT, "test", "fixtures", "specs", name), "utf8")) as Record<string, unknown>;

const tests: RunResult["tests"] = [
  { name: "a", status: "pass", message: null, output: null, test_code: "msglab run x --only 1", hint: null, durationMs: 5 },
  { name: "b", status: "fail", message: "saw 2", output: "log line", test_code: "msglab run x --only 2", hint: "look", durationMs: 6 },
];
const result: RunResult = {
  version: 2,
  status: "fail",
  message: null,
  tests,
  checks: tests,
  exercise: "x",
  submission: "/tmp/x.ts",
  runId: "0000abcd",
  summary: "1/2 checks passed",
  seed: 1,
  score: 1,
  maxScore: 2,
  durationMs: 20,
  output: null,
  warnings: [],
  sandbox: "bwrap",
  labError: false,
};

/** Every key of `example` is in `ours`, with a value of the same JSON type (null allowed where the spec allows it). */
function sameShape(example: Record<string, unknown>, ours: Record<string, unknown>, nullable: string[] = []): void {
  for (const [k, v] of Object.entries(example)) {
    expect(ours, `missing "${k}"`).toHaveProperty(k);
    if (v === null || ours[k] === null) {
      if (ours[k] !== null) expect(typeof ours[k]).toBe("string");
      else expect(nullable.includes(k) || v === null, `"${k}" is null`).toBe(true);
      continue;
    }
    expect(typeof ours[k], `"${k}"`).toBe(typeof v);
  }
}

describe("exercism results.json version 2", () => {
  const ex = spec("exercism-results-v2.json");
  it("has the top-level fields, with version 2", () => {
    sameShape(ex, result as unknown as Record<string, unknown>);
    expect(result.version).toBe(ex.version);
  });
  it("has each test's fields, in file order", () => {
    const t = (ex.tests as Record<string, unknown>[])[0]!;
    for (const ours of result.tests) sameShape(t, ours as unknown as Record<string, unknown>, ["message", "output"]);
  });
  it("is `error` only when no test could run", () => {
    expect(overallStatus([{ ...tests[0]!, status: "error" }, tests[1]!])).toBe("fail");
    expect(overallStatus([{ ...tests[0]!, status: "error" }])).toBe("error");
    expect(overallStatus([tests[0]!])).toBe("pass");
  });
});

describe("GitHub Classroom's autograding result", () => {
  const ex = spec("classroom-result.json");
  it("has the top-level and per-test fields, a point per passing check and the max score", () => {
    const payload = toClassroom([result]);
    sameShape(ex, payload as unknown as Record<string, unknown>);
    sameShape((ex.tests as Record<string, unknown>[])[0]!, payload.tests[1] as unknown as Record<string, unknown>, ["message"]);
    expect(payload.max_score).toBe(2);
    expect(payload.tests.map((t) => t.score)).toEqual([1, 0]);
    expect(payload.status).toBe("fail");
  });
  it("is written as the step output the reporter decodes", () => {
    const line = classroomOutputLine(toClassroom([result]));
    expect(line).toMatch(/^result=[A-Za-z0-9+/=]+\n$/);
    const decoded = JSON.parse(Buffer.from(line.slice("result=".length).trim(), "base64").toString("utf8")) as { max_score: number };
    expect(decoded.max_score).toBe(2);
  });
});
