import type { Rng } from "./rng.ts";
import type { Namespace } from "./names.ts";
import type { RabbitKit } from "./rabbit.ts";
import type { KafkaKit } from "./kafka.ts";
import type { ChaosProxy } from "./proxy.ts";
import type { Host } from "./host.ts";

/** What the submission must export: the engine checks these before any check runs. */
export type ExportSpec<S> = { [K in keyof S & string]: "function" | "class" | "object" };

/** The learner's exports as seen from the grader: every call crosses to a host and is async. */
export type Learner<S> = { [K in keyof S]: S[K] extends (...args: infer A) => infer R ? (...args: A) => Promise<Awaited<R>> : never };

/** Everything a check gets. Nothing here is shared with another check. */
export interface CheckContext<S> {
  /**
   * The learner's module in this check's first submission host (started on first use): each
   * call runs there, sandboxed, and resolves with what it returned. Arguments cross as data,
   * callbacks into the grader, or capabilities made with `host.cap(...)`.
   */
  learner: Learner<S>;
  /** The host behind `learner` (started on first use). */
  learnerHost(): Promise<Host>;
  /** Another submission host for this check, e.g. a second process or a restart after a crash. Killed when the check ends. */
  host(opts?: { memoryMb?: number }): Promise<Host>;
  /** Marks a callback the host must call synchronously (`random()`, `clock.now()`): it blocks there until the grader answers. */
  sync<F extends (...args: never[]) => unknown>(fn: F): F;
  /**
   * A folder every host of this check may write (the host's own `host.dir` is private to it):
   * where a database lives that a restarted host reopens, or two writer processes share. The
   * grader reads it from outside too. Removed after the check.
   */
  sharedDir: string;
  /** This grading's RabbitMQ URL (its own vhost): for the grader's connections and the learner's. */
  amqpUrl: string;
  kafkaBrokers: string[];
  /** This check's seed (derived from the run's seed and the check's name). */
  seed: number;
  rng: Rng;
  /** Unique queue, exchange, topic and group names, cleaned up after the check. */
  names: Namespace;
  rabbit: RabbitKit;
  kafka: KafkaKit;
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
  waitFor<V>(condition: () => V | Promise<V>, opts: { timeoutMs: number; message: string | (() => string); intervalMs?: number }): Promise<NonNullable<V>>;
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
  /**
   * One learner host for every check of a grading (until a check kills it) instead of a fresh
   * one per check. For exercises whose exports are plain functions of their arguments: a host
   * start is most of such a check's time. A fresh process is still one `t.host()` away.
   */
  shareLearnerHost?: boolean;
  /**
   * How many checks may run at the same time (default 1). Checks share nothing by design and
   * mostly wait on brokers and timers, so running a few at once cuts a grading's wall time; each
   * check's timing windows must then hold with its neighbours running. Ignored with
   * `shareLearnerHost` (one host cannot serve two checks at once).
   */
  concurrency?: number;
  checks: Check<S>[];
}

/** Identity with types: a grader module's default export. */
export function defineGrader<S>(grader: Grader<S>): Grader<S> {
  return grader;
}
