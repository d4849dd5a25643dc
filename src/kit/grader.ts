import type { Rng } from "./rng.ts";
import type { Namespace } from "./names.ts";
import type { RabbitKit } from "./rabbit.ts";
import type { KafkaKit } from "./kafka.ts";
import type { ChaosProxy } from "./proxy.ts";
import type { CrashHarness } from "./crash.ts";

/** What the submission must export: the engine checks these before any check runs. */
export type ExportSpec<S> = { [K in keyof S & string]: "function" | "class" | "object" };

/** Everything a check gets. Nothing here is shared with another check. */
export interface CheckContext<S> {
  /** The learner's module, already checked against the grader's `exports`. */
  submission: S;
  /** This check's seed (derived from the run's seed and the check's name). */
  seed: number;
  rng: Rng;
  /** Unique queue, exchange, topic and group names, cleaned up after the check. */
  names: Namespace;
  rabbit: RabbitKit;
  kafka: KafkaKit;
  /** The learner's file, for graders that run it in worker processes. */
  submissionPath: string;
  /** Runs the learner's code in worker processes the grader can SIGKILL; all reaped after the check. */
  workers: CrashHarness;
  /** A chaos proxy in front of RabbitMQ (ephemeral port), closed after the check. */
  proxy(): Promise<ChaosProxy>;
  /** A fresh temp folder for this check (SQLite files and the like); removed afterwards. */
  tmpDir: string;
  /** Registers teardown, run in reverse order after the check, pass or fail. */
  defer(fn: () => unknown | Promise<unknown>): void;
  /** Fails the check: the learner's code is wrong. */
  fail(message: string): never;
  /**
   * Polls an outside observation (broker state, SQLite rows) until it holds. For observations
   * that have no event to wait on; the message becomes the failure when time runs out (a function
   * is called then, so it can report the last thing observed).
   */
  waitFor(condition: () => boolean | Promise<boolean>, opts: { timeoutMs: number; message: string | (() => string); intervalMs?: number }): Promise<void>;
  /**
   * Awaits something the learner's code returned, failing the check (not hanging it) when it
   * does not settle in time. `what` names it for the message: "publishOrder()".
   */
  within<T>(what: string, ms: number, value: Promise<T> | T): Promise<T>;
}

export interface Check<S> {
  /** Shown to the learner: says what is verified. */
  name: string;
  /** Printed under a failure: the nudge, not the answer. */
  hint: string;
  /** Per-check limit; the run's hard timeout still applies. */
  timeoutMs?: number;
  run(t: CheckContext<S>): Promise<void>;
}

export interface Grader<S> {
  exports: ExportSpec<S>;
  checks: Check<S>[];
}

/** Identity with types: a grader module's default export. */
export function defineGrader<S>(grader: Grader<S>): Grader<S> {
  return grader;
}
