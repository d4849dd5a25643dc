/**
 * The results JSON, versioned, in the exercism test-runner shape with GitHub Classroom's
 * score fields. `fail` is the learner's bug; `error` is anything that kept a check from running.
 */
export const RESULT_VERSION = 1;

export type Status = "pass" | "fail" | "error";

export interface CheckResult {
  name: string;
  status: Status;
  message: string | null;
  hint: string | null;
  durationMs: number;
}

export interface RunResult {
  version: typeof RESULT_VERSION;
  exercise: string;
  submission: string;
  status: Status;
  /** Why the whole run is `error`, or a summary line. */
  message: string | null;
  seed: number;
  score: number;
  maxScore: number;
  durationMs: number;
  checks: CheckResult[];
  /** The tail of what the submission printed, when it helps explain an error. */
  output: string | null;
  /** What the lab could not guarantee for this run (no vhost of its own, say). */
  warnings: string[];
  /** How the submission was isolated: "bwrap" (bubblewrap + Node's permission model) or "permission" (the model alone). */
  sandbox: "bwrap" | "permission";
  /** Present when Ctrl-C stopped the grading: the result is not an attempt. */
  interrupted?: true;
}

/** error wins over fail, fail over pass: the run is only as good as its worst check. */
export function overallStatus(checks: CheckResult[]): Status {
  if (checks.length === 0) return "error";
  if (checks.some((c) => c.status === "error")) return "error";
  if (checks.some((c) => c.status === "fail")) return "fail";
  return "pass";
}
