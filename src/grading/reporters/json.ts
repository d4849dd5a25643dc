import type { RunResult } from "../result.ts";

/** One result as itself; several as a versioned envelope, so `check --reporter json` stays parseable. */
export function toJson(results: RunResult | RunResult[]): string {
  if (!Array.isArray(results)) return JSON.stringify(results, null, 2) + "\n";
  const status = results.some((r) => r.status === "error") ? "error" : results.some((r) => r.status === "fail") ? "fail" : "pass";
  return JSON.stringify({ version: 2, status, results }, null, 2) + "\n";
}
