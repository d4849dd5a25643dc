import { XMLValidator } from "fast-xml-parser";
import { describe, expect, it } from "vitest";
import type { RunResult } from "../result.ts";
import { toJUnit } from "./junit.ts";

const tests: RunResult["tests"] = [
  { name: "ok <one>", status: "pass", message: null, output: null, test_code: null, hint: null, durationMs: 5 },
  { name: "bad", status: "fail", message: 'saw "x" < expected\u0001', output: null, test_code: null, hint: "look", durationMs: 6 },
  { name: "broke", status: "error", message: "broker down", output: null, test_code: null, hint: null, durationMs: 0, cause: "lab" },
];

const result: RunResult = {
  version: 2,
  runId: "0000abcd",
  summary: "1/3 checks passed",
  labError: true,
  tests,
  exercise: "demo",
  submission: "/tmp/a&b.ts",
  status: "fail",
  message: null,
  seed: 7,
  score: 1,
  maxScore: 3,
  durationMs: 1200,
  output: null,
  warnings: [],
  sandbox: "bwrap",
  checks: tests,
};

describe("toJUnit", () => {
  it("writes valid XML with failures and errors counted, even for awkward text", () => {
    const xml = toJUnit([result]);
    expect(XMLValidator.validate(xml)).toBe(true);
    expect(xml).toMatch(/<testsuites name="msglab" tests="3" failures="1" errors="1"/);
    expect(xml).toMatch(/<failure message="saw &quot;x&quot; &lt; expected">/);
    expect(xml).toMatch(/<error message="broker down">/);
  });
});
