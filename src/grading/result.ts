/**
 * The results JSON: exercism's test-runner results.json, version 2, exactly (`version`, `status`,
 * `message`, `tests` with `name`, `status`, `message`, `output`, `test_code`, in the grader's
 * order), with msglab's own fields beside it: `seed`, `score`/`maxScore` (GitHub Classroom's),
 * hints, durations, the sandbox, warnings. `checks` is an alias of `tests` kept for one release.
 *
 * A test's `fail` is the learner's bug; `error` is anything that kept it from running. The run's
 * `status` follows exercism: `error` only when no test could run (a syntax error, a missing
 * export, brokers down before the first check), else `fail` when any test did not pass.
 */
export const RESULT_VERSION = 2;

export type Status = "pass" | "fail" | "error";

export interface CheckResult {
  name: string;
  status: Status;
  message: string | null;
  /** What the learner's code printed during the check (its tail), or null. */
  output: string | null;
  /** How to run exactly this check again: exercism's field for the test's code. */
  test_code: string | null;
  hint: string | null;
  durationMs: number;
  /** For `error`: whose problem it was. `lab`: a broker, the machine or a grader bug; `submission`: the learner's code (a timeout, say). */
  cause?: "lab" | "submission";
}

export interface RunResult {
  version: typeof RESULT_VERSION;
  status: Status;
  /** exercism: why no test could run, when `status` is `error`; otherwise null. */
  message: string | null;
  tests: CheckResult[];
  /** @deprecated The same array as `tests`, under its old name; removed in the next release. */
  checks: CheckResult[];
  exercise: string;
  submission: string;
  /** This grading's id: its temp folder is msglab-<runId>, its vhost msglab-<runId>. */
  runId: string;
  /** A one-line summary for people ("9/10 checks passed; …"). */
  summary: string;
  seed: number;
  score: number;
  maxScore: number;
  durationMs: number;
  /** The tail of what the grading printed, when it helps explain an error. */
  output: string | null;
  /** What the lab could not guarantee for this run (no vhost of its own, say). */
  warnings: string[];
  /** How the submission was isolated: "bwrap" (bubblewrap + Node's permission model) or "permission" (the model alone). */
  sandbox: "bwrap" | "permission";
  /** True when an error came from the lab or the brokers, not from the submission: regrade it. */
  labError: boolean;
  /** Present when Ctrl-C stopped the grading: the result is not an attempt. */
  interrupted?: true;
}

/** exercism's rule: `error` only if no test ran; `fail` if any did not pass; else `pass`. */
export function overallStatus(checks: CheckResult[]): Status {
  if (checks.length === 0 || checks.every((c) => c.status === "error")) return "error";
  if (checks.some((c) => c.status !== "pass")) return "fail";
  return "pass";
}
