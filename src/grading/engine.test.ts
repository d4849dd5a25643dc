import { describe, expect, it } from "vitest";
import { interpret } from "./engine.ts";
import type { ChildMessage } from "./protocol.ts";

const exit = { code: 0, signal: null };
const plan: ChildMessage = { type: "plan", checks: ["a", "b", "c"] };
const pass = (name: string, index: number): ChildMessage => ({ type: "check-end", index, result: { name, status: "pass", message: null, output: null, test_code: null, hint: null, durationMs: 1 } });

describe("interpret", () => {
  it("keeps finished checks and marks the running and remaining ones as errors after a timeout", () => {
    const { checks, message } = interpret([plan, { type: "check-start", index: 0, name: "a" }, pass("a", 0), { type: "check-start", index: 1, name: "b" }], {
      timedOut: true,
      timeoutMs: 3000,
      exit: { code: null, signal: "SIGKILL" },
      output: "",
    });
    expect(message).toMatch(/timed out after 3000 ms during "b"/);
    expect(checks.map((c) => c.status)).toEqual(["pass", "error", "error"]);
    expect(checks[2]!.message).toMatch(/^Not run:/);
  });

  it("reports a crash with the last output", () => {
    const { message } = interpret([plan], { timedOut: false, timeoutMs: 1, exit: { code: 134, signal: null }, output: "boom\nSegmentation fault" });
    expect(message).toMatch(/exited with code 134/);
    expect(message).toMatch(/Segmentation fault/);
  });

  it("gives a single error when nothing was planned (the grader never loaded)", () => {
    const { checks } = interpret([{ type: "abort", reason: "broker", message: "RabbitMQ is not reachable" }], { timedOut: false, timeoutMs: 1, exit, output: "" });
    expect(checks).toEqual([expect.objectContaining({ status: "error", message: "RabbitMQ is not reachable" })]);
  });
});
