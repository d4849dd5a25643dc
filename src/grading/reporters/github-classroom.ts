import type { RunResult } from "../result.ts";

/**
 * The payload GitHub Classroom's autograding reporter (`classroom-resources/autograding-grading-reporter`)
 * reads from a runner step: `{ version: 1, status, max_score, tests: [{ name, status, message,
 * score, … }] }`, base64-encoded in the step's `result` output. One point per check; several
 * exercises make one payload with their checks prefixed by the exercise.
 */
export interface ClassroomPayload {
  version: 1;
  status: "pass" | "fail" | "error";
  max_score: number;
  tests: { name: string; status: "pass" | "fail" | "error"; message: string | null; test_code: string; filename: string; line_no: number; execution_time: string; score: number }[];
}

export function toClassroom(results: RunResult[]): ClassroomPayload {
  const many = results.length > 1;
  const tests = results.flatMap((r) =>
    r.tests.map((t) => ({
      name: many ? `${r.exercise}: ${t.name}` : t.name,
      status: t.status,
      message: t.message,
      test_code: t.test_code ?? `msglab run ${r.exercise}`,
      filename: r.submission,
      line_no: 0,
      execution_time: `${(t.durationMs / 1000).toFixed(2)}s`,
      score: t.status === "pass" ? 1 : 0,
    })),
  );
  const status = results.some((r) => r.status === "error") && tests.every((t) => t.status === "error") ? "error" : tests.every((t) => t.status === "pass") && tests.length > 0 ? "pass" : "fail";
  return { version: 1, status, max_score: tests.length, tests };
}

/** The line a runner step appends to $GITHUB_OUTPUT: `result=<base64 JSON>`. */
export function classroomOutputLine(payload: ClassroomPayload): string {
  return `result=${Buffer.from(JSON.stringify(payload)).toString("base64")}\n`;
}
