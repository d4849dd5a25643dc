import { CheckFailure, VirtualClock, defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { CheckContext, Host, Rng } from "../../../src/kit/index.ts";
import type { Retry, RetryOptions } from "../../../src/contracts/retry-backoff.ts";

interface Submission {
  retry: Retry;
}
type T = CheckContext<Submission>;

/**
 * Real time the learner's code gets to react to something the grader did (an attempt failing, time
 * moving, an abort). Correct code needs microseconds; this is only there so a wrong one (waiting on
 * setTimeout, ignoring an abort) fails with a message instead of hanging. Generous for a loaded box.
 */
const REACT_MS = 3000;

// ---------------------------------------------------------------------------------------------
// The clock the learner gets: the kit's VirtualClock, plus a note of every sleep and its wake-up
// time, and a poke on every sleep request so the grader waits on events rather than polling.

class WatchedClock extends VirtualClock {
  /** Every sleep requested, with the virtual time it wakes at and whether it has ended. */
  readonly requests: { ms: number; until: number; done: boolean }[] = [];

  constructor(private readonly poke: () => void) {
    super(0);
    // Learner code may call clock.sleep detached (`const { sleep } = clock`); keep `this`.
    this.now = this.now.bind(this);
    this.sleep = this.sleep.bind(this);
  }

  override sleep(ms: number, signal?: AbortSignal): Promise<void> {
    const p = super.sleep(ms, signal);
    const entry = { ms, until: this.now() + ms, done: false };
    this.requests.push(entry);
    const end = () => {
      entry.done = true;
      this.poke();
    };
    // Observe the end without handling the rejection for the learner (their await still sees it).
    p.then(end, end);
    this.poke();
    return p;
  }

  /** The earliest wake-up among the sleeps still running, or null. */
  nextWake(): number | null {
    const open = this.requests.filter((r) => !r.done).map((r) => r.until);
    return open.length ? Math.min(...open) : null;
  }
}

/** A few turns here, then a few in the learner's host: its reaction to what just happened has arrived. */
async function ticks(host: Host): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
  await host.turns();
}

// ---------------------------------------------------------------------------------------------
// Plans: what the grader's operation does on each attempt, and the options it passes.

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };
type Step = Outcome | { hold: true };

interface Plan {
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  jitter: "none" | "full";
  /** What random() returns, call after call. */
  randoms: number[];
  /** What attempt n (index n − 1) does. */
  steps: Step[];
  /** When set, isRetryable is passed and returns false exactly for these values. */
  fatal?: Set<unknown>;
  /**
   * How long attempt n takes in virtual time (index n − 1), drawn for every plan: an attempt
   * is I/O, not an instant, and the delay is measured from its failure, not from its start.
   */
  durations?: number[];
}

interface Expected {
  attempts: number;
  /** Virtual time each attempt must start at. */
  startsAt: number[];
  sleeps: number[];
  randomCalls: number;
  result: Outcome;
  why: "success" | "fatal" | "exhausted";
}

class GraderError extends Error {
  override name = "GraderError";
}

/** The value attempt `n` throws: mostly Errors, sometimes a plain object or a string (JS throws anything). */
function failure(rng: Rng, n: number, tag: string, kind?: "error" | "object" | "string"): Outcome {
  const k = kind ?? (rng.next() < 0.7 ? "error" : rng.pick(["object", "string"] as const));
  const id = `${tag}-${n}-${rng.int(1000, 9999)}`;
  if (k === "object") return { ok: false, error: { code: "E_BUSY", attempt: n, id } };
  if (k === "string") return { ok: false, error: `attempt ${n} failed (${id})` };
  return { ok: false, error: new GraderError(`attempt ${n} failed (${id})`) };
}

const FALSY = [0, "", null, undefined, false] as const;

/** A success value: a fresh object (checked by identity), or a falsy one when asked, since `if (result)` is a real bug. */
function success(rng: Rng, n: number, falsy = false): Outcome {
  return { ok: true, value: falsy ? rng.pick(FALSY) : { order: `o-${rng.int(1, 99999)}`, attempt: n } };
}

/** random() values from the seed, with the edges mixed in: 0 and the largest double below 1. */
function randoms(rng: Rng, count: number, lo = 0, hi = 1): number[] {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(lo + rng.next() * (hi - lo));
  if (lo === 0 && hi === 1 && count > 3) {
    out[rng.int(0, 2)] = 0;
    out[rng.int(3, count - 1)] = 1 - 2 ** -53;
  }
  return out;
}

function cappedDelay(plan: Plan, failed: number): number {
  return Math.min(plan.maxDelayMs, plan.baseDelayMs * 2 ** (failed - 1));
}

/** What the contract says must happen, computed independently of the learner's code. */
function model(plan: Plan): Expected {
  const startsAt: number[] = [];
  const sleeps: number[] = [];
  let at = 0;
  let r = 0;
  for (let n = 1; ; n++) {
    startsAt.push(at);
    const step = plan.steps[n - 1];
    if (!step || "hold" in step) throw new Error(`grader bug: plan has no outcome for attempt ${n}`);
    const base = { attempts: n, startsAt, sleeps, result: step };
    if (step.ok) return { ...base, randomCalls: r, why: "success" };
    if (plan.fatal?.has(step.error)) return { ...base, randomCalls: r, why: "fatal" };
    if (n >= plan.maxAttempts) return { ...base, randomCalls: r, why: "exhausted" };
    const capped = cappedDelay(plan, n);
    const delay = plan.jitter === "none" ? capped : Math.floor(plan.randoms[r++]! * capped);
    sleeps.push(delay);
    at += (plan.durations?.[n - 1] ?? 0) + delay;
  }
}

function show(v: unknown): string {
  if (v instanceof Error) return `${v.name}(${JSON.stringify(v.message)})`;
  return describeValue(v, 120);
}

function showPlan(plan: Plan): string {
  const parts = [`maxAttempts ${plan.maxAttempts}`, `baseDelayMs ${plan.baseDelayMs}`, `maxDelayMs ${plan.maxDelayMs}`, `jitter "${plan.jitter}"`];
  return `{ ${parts.join(", ")} }`;
}

function list(xs: readonly number[]): string {
  return `[${xs.join(", ")}]`;
}

// ---------------------------------------------------------------------------------------------
// One run of the learner's retry() against a plan, driven on the virtual clock.

class Run {
  readonly clock: WatchedClock;
  readonly attempts: { attempt: unknown; at: number; signal: unknown }[] = [];
  readonly retryableArgs: unknown[] = [];
  randomCalls = 0;
  settled: Outcome | null = null;
  /** The attempt the plan holds open, for the grader to settle. */
  held: { resolve: (v: unknown) => void; reject: (e: unknown) => void } | null = null;
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly t: T,
    readonly host: Host,
    readonly plan: Plan,
    readonly signal?: AbortSignal,
  ) {
    plan.durations ??= plan.steps.map(() => t.rng.int(1, 900));
    this.clock = new WatchedClock(() => this.poke());
  }

  poke(): void {
    for (const w of [...this.waiters]) w();
  }

  start(): void {
    const { plan } = this;
    const options: RetryOptions = {
      maxAttempts: plan.maxAttempts,
      baseDelayMs: plan.baseDelayMs,
      maxDelayMs: plan.maxDelayMs,
      jitter: plan.jitter,
      // Synchronous in the contract, so a blocking call into the grader: counted here, exactly.
      random: this.t.sync(() => {
        const v = plan.randoms[this.randomCalls] ?? 0.5;
        this.randomCalls++;
        return v;
      }),
    };
    if (plan.fatal) {
      const fatal = plan.fatal;
      // What the learner passes comes back as the very value the operation threw (wire identity).
      options.isRetryable = this.t.sync((error: unknown) => {
        this.retryableArgs.push(error);
        return !fatal.has(error);
      });
    }
    if (this.signal) options.signal = this.signal;
    const operation = (attempt: number, signal: AbortSignal | undefined): Promise<unknown> => {
      const index = this.attempts.length;
      this.attempts.push({ attempt, at: this.clock.now(), signal });
      this.poke();
      const step = plan.steps[index] ?? failure(this.t.rng, index + 1, "unplanned", "error");
      if ("hold" in step) {
        return new Promise((resolve, reject) => {
          this.held = { resolve, reject };
        });
      }
      // The attempt takes its planned virtual time (no sleep of the learner's is running then),
      // and settles a turn later, as real I/O would.
      const duration = plan.durations?.[index] ?? 0;
      return (async () => {
        if (duration > 0) await this.clock.advance(duration);
        await new Promise((r) => setImmediate(r));
        if (step.ok) return step.value;
        throw step.error;
      })();
    };
    // The learner's clock: `now()` answers synchronously from the grader's virtual time, and
    // `sleep(ms, signal)` is the grader's, so every request is seen and time moves only here.
    const clock = this.clock;
    const learnerClock = { now: this.t.sync(() => clock.now()), sleep: (ms: number, signal?: AbortSignal) => clock.sleep(ms, signal) };
    const p = this.host.call<unknown>("retry", operation, options, learnerClock);
    p.then(
      (value) => {
        this.settled = { ok: true, value };
        this.poke();
      },
      (error) => {
        this.settled = { ok: false, error };
        this.poke();
      },
    );
  }

  /** Waits (on events, not a poll) until `cond` holds; fails with `message()` after REACT_MS of real time. */
  until(cond: () => boolean, message: () => string): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w = () => {
        if (!cond()) return;
        this.waiters.delete(w);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new CheckFailure(message()));
      }, REACT_MS);
      this.waiters.add(w);
    });
  }

  /** A description of where the run stands, for a "nothing happened" failure. */
  stuck(): string {
    const n = this.attempts.length;
    const where = n === 0 ? "before any attempt" : `after attempt ${n} ${this.held ? "started" : "failed"} (virtual time ${this.clock.now()} ms)`;
    return (
      `With ${showPlan(this.plan)}, ${where} retry() neither requested a sleep on the injected clock nor settled ` +
      `within ${REACT_MS / 1000} s of real time. Wait only with clock.sleep(ms, signal): setTimeout and other real timers ` +
      `do not move with the grader's clock, and an await that never settles hangs the caller.`
    );
  }

  /**
   * Plays the plan: whenever a sleep is running, moves virtual time exactly to its end; stops when
   * retry() settles or `stopWhen` holds. Then lets time run far ahead to catch work after the end.
   */
  async drive(stopWhen?: () => boolean): Promise<void> {
    const limit = this.plan.maxAttempts + 6;
    for (let step = 0; step < limit * 3; step++) {
      await this.until(() => this.settled !== null || this.clock.pending > 0 || (stopWhen?.() ?? false), () => this.stuck());
      if (stopWhen?.()) return;
      if (this.settled) break;
      if (this.attempts.length > limit || this.clock.requests.length > limit) break;
      const wake = this.clock.nextWake();
      if (wake === null) {
        // A sleep the kit counts as pending but that we did not see start: just let time pass.
        await this.clock.advance(1);
        continue;
      }
      await this.clock.advance(Math.max(0, wake - this.clock.now()));
    }
    await this.settle();
  }

  /** After the end: move time far ahead and give stray code a few turns, so late attempts show. */
  async settle(): Promise<void> {
    await ticks(this.host);
    await this.clock.advance(10_000_000);
    await ticks(this.host);
  }

  nonZeroSleeps(): number[] {
    return this.clock.requests.map((r) => r.ms).filter((ms) => ms !== 0);
  }

  /** Compares the run with the model; fails with the first difference, in words. */
  verify(expected: Expected, about = ""): void {
    const t: T = this.t;
    const plan = this.plan;
    const ctx = `With ${showPlan(plan)}${about}`;
    const n = this.attempts.length;
    if (this.settled === null) {
      t.fail(`${ctx}, retry() had still not settled after ${n} attempts and ${this.clock.requests.length} sleeps.`);
    }
    if (n !== expected.attempts) {
      const why =
        expected.why === "success"
          ? `attempt ${expected.attempts} succeeded, so retry() must return its value`
          : expected.why === "fatal"
            ? `attempt ${expected.attempts} threw ${show(expected.result.ok ? null : expected.result.error)}, which isRetryable() refuses, so it must be rethrown at once`
            : `maxAttempts is ${plan.maxAttempts} (the first attempt included), so the error of attempt ${expected.attempts} must be rethrown`;
      const ended = this.settled.ok ? `resolved with ${show(this.settled.value)}` : `rejected with ${show(this.settled.error)}`;
      t.fail(`${ctx}, your code made ${n} attempt(s), expected ${expected.attempts}: ${why}. (retry() ${ended}.)`);
    }
    const numbers = this.attempts.map((a) => a.attempt);
    const want = Array.from({ length: n }, (_, i) => i + 1);
    if (numbers.some((a, i) => a !== want[i])) {
      t.fail(`${ctx}, the operation was called with attempt numbers ${describeValue(numbers)}; expected ${list(want)} (the first attempt is 1).`);
    }
    const got = this.settled;
    const res = expected.result;
    if (res.ok) {
      if (!got.ok) t.fail(`${ctx}, attempt ${n} succeeded but retry() rejected with ${show(got.error)}; it must resolve with the operation's value.`);
      if (!Object.is(got.value, res.value)) {
        t.fail(`${ctx}, attempt ${n} returned ${show(res.value)} but retry() resolved with ${show(got.value)}; return the operation's value as is.`);
      }
    } else {
      if (got.ok) t.fail(`${ctx}, every allowed attempt failed but retry() resolved with ${show(got.value)}; it must reject.`);
      if (!Object.is(got.error, res.error)) {
        const first = this.plan.steps[0];
        const isFirst = n > 1 && first && !("hold" in first) && !first.ok && Object.is(got.error, first.error);
        t.fail(
          `${ctx}, retry() rejected with ${show(got.error)}; expected the very value attempt ${n} threw, ${show(res.error)}` +
            (isFirst ? " (you rethrew the FIRST attempt's error)" : "") +
            `. Rethrow it unchanged: callers test its type and fields, and a wrapper or a new Error hides them.`,
        );
      }
    }
    const sleeps = this.nonZeroSleeps();
    const wantSleeps = expected.sleeps.filter((ms) => ms !== 0);
    if (sleeps.length !== wantSleeps.length || sleeps.some((ms, i) => ms !== wantSleeps[i])) {
      const extraAtEnd =
        sleeps.length === wantSleeps.length + 1 && wantSleeps.every((ms, i) => ms === sleeps[i]) && expected.why !== "success";
      if (extraAtEnd) {
        t.fail(
          `${ctx}, your code slept ${sleeps.at(-1)} ms after the final attempt (sleeps ${list(sleeps)}, expected ${list(wantSleeps)}): ` +
            `once no attempt is left, or the error is not retryable, rethrow at once; that wait only delays the caller.`,
        );
      }
      // Jitter added to the capped delay instead of drawn below it: every delay at or above its cap.
      const caps = sleeps.map((_, i) => cappedDelay(plan, i + 1));
      if (plan.jitter === "full" && sleeps.length > 1 && sleeps.every((ms, i) => ms >= caps[i]!) && sleeps.some((ms, i) => ms > caps[i]!)) {
        t.fail(
          `${ctx}, every delay was at or above its capped value (sleeps ${list(sleeps)}, capped delays ${list(caps)}): the jitter was added on top. ` +
            `Full jitter draws below the cap, Math.floor(random() * capped), so no delay ever exceeds it.`,
        );
      }
      const firstDiff = sleeps.findIndex((ms, i) => ms !== wantSleeps[i]);
      const at = firstDiff >= 0 ? firstDiff : Math.min(sleeps.length, wantSleeps.length);
      t.fail(
        `${ctx}, the sleeps requested on the clock were ${list(sleeps)} ms; expected ${list(wantSleeps)} ms` +
          (at < wantSleeps.length ? ` (delay ${at + 1} should be ${wantSleeps[at]} ms)` : "") +
          (plan.jitter === "full" ? `; random() returned ${list(plan.randoms.slice(0, Math.max(1, expected.randomCalls)).map((r) => +r.toFixed(6)))}` : "") +
          ".",
      );
    }
    const starts = this.attempts.map((a) => a.at);
    if (starts.some((at, i) => at !== expected.startsAt[i])) {
      t.fail(
        `${ctx}, the attempts started at virtual times ${list(starts)} ms; expected ${list(expected.startsAt)} ms. ` +
          `An attempt must wait for its whole delay: await clock.sleep(delay, signal) before calling the operation again.`,
      );
    }
    if (plan.jitter === "full" && this.randomCalls !== expected.randomCalls) {
      t.fail(
        `${ctx}, random() was called ${this.randomCalls} time(s) for ${expected.randomCalls} delay(s); call it exactly once per delay, ` +
          `when you compute that delay, so a seeded random gives reproducible delays.`,
      );
    }
    if (plan.fatal) {
      const thrown = plan.steps.slice(0, n).flatMap((s) => ("hold" in s || s.ok ? [] : [s.error]));
      const odd = this.retryableArgs.findIndex((a) => !thrown.some((e) => Object.is(e, a)));
      if (odd >= 0) {
        t.fail(`${ctx}, isRetryable() was called with ${show(this.retryableArgs[odd])}, which no attempt threw; pass it exactly what the operation threw.`);
      }
    }
  }
}

/** Plays a whole plan and checks it against the model. */
async function play(t: T, plan: Plan, about = ""): Promise<Run> {
  const run = new Run(t, await t.learnerHost(), plan);
  run.start();
  await run.drive();
  run.verify(model(plan), about);
  return run;
}

/** Steps where every attempt fails, except (optionally) a success at `okAt`. */
/**
 * Steps where every attempt fails, except (optionally) a success at `okAt`. The failures cycle
 * through every kind JavaScript throws (an Error, a plain object, a string) in a seeded order:
 * the seed picks which attempt throws what, never whether a kind is tested.
 */
function steps(rng: Rng, count: number, okAt: number | null, tag: string, falsy = false): Step[] {
  const kinds = rng.shuffle(["error", "object", "string"] as const);
  const out: Step[] = [];
  let f = 0;
  for (let n = 1; n <= count + 2; n++) out.push(n === okAt ? success(rng, n, falsy) : failure(rng, n, tag, kinds[f++ % kinds.length]));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Abort helpers

function newAbort(rng: Rng): { controller: AbortController; abort: () => void; label: string } {
  const controller = new AbortController();
  if (rng.next() < 0.5) {
    const reason = new GraderError(`cancelled by the caller (${rng.int(1000, 9999)})`);
    return { controller, abort: () => controller.abort(reason), label: "abort(reason)" };
  }
  // abort() without a reason: signal.reason becomes a DOMException named AbortError.
  return { controller, abort: () => controller.abort(), label: "abort()" };
}

function expectAbortRejection(t: T, run: Run, reason: unknown, ctx: string): void {
  const got = run.settled;
  if (!got) t.fail(`${ctx}: retry() had not settled.`);
  if (got.ok) t.fail(`${ctx}: retry() resolved with ${show(got.value)}; an aborted retry must reject.`);
  if (!Object.is(got.error, reason)) {
    t.fail(
      `${ctx}: retry() rejected with ${show(got.error)}; expected signal.reason itself, ${show(reason)}. ` +
        `The caller chose that reason (or got the standard AbortError); signal.throwIfAborted() and an aborted clock.sleep both give it.`,
    );
  }
}

/**
 * An abort while attempt k is in flight, then that attempt fails. `where` says which attempt and
 * how: "middle" (k < maxAttempts; it fails with the signal's reason or its own error), "last"
 * (k = maxAttempts; its own error), "fatal" (k < maxAttempts; its own error, which isRetryable
 * refuses). In every case retry() must reject with signal.reason, with no further attempt.
 */
async function abortInFlight(t: T, where: "middle" | "last" | "fatal"): Promise<void> {
  const maxAttempts = t.rng.int(3, 6);
  const k = where === "last" ? maxAttempts : t.rng.int(1, maxAttempts - 1);
  const s = steps(t.rng, maxAttempts, null, "in-flight");
  s[k - 1] = { hold: true };
  const own = new GraderError(`attempt ${k} failed after the abort`);
  const plan: Plan = {
    maxAttempts,
    baseDelayMs: t.rng.int(1000, 5000),
    maxDelayMs: 60_000,
    jitter: t.rng.pick(["none", "full"] as const),
    randoms: randoms(t.rng, 3 * maxAttempts + 10, 0.2, 0.999),
    steps: s,
  };
  if (where === "fatal") plan.fatal = new Set([own]);
  const { controller, abort, label } = newAbort(t.rng);
  const run = new Run(t, await t.learnerHost(), plan, controller.signal);
  run.start();
  await run.drive(() => run.attempts.length >= k);
  if (run.attempts.length !== k || !run.held) {
    t.fail(`With ${showPlan(plan)}, the grader expected attempt ${k} to be in flight but saw ${run.attempts.length} attempt(s); the operation must be called once per attempt, one at a time.`);
  }
  const which = where === "last" ? `attempt ${k}, the last one maxAttempts allows,` : `attempt ${k}`;
  const ctx = `With ${showPlan(plan)}${plan.fatal ? " and isRetryable" : ""}, the caller called ${label} while ${which} was in flight`;
  const received = run.attempts.map((a) => a.signal);
  const bad = received.findIndex((sig) => (sig as AbortSignal | undefined)?.aborted !== false);
  if (bad >= 0) {
    t.fail(
      `With ${showPlan(plan)} and options.signal set, attempt ${bad + 1}${bad + 1 === maxAttempts ? " (the last)" : ""} received ${show(received[bad])} as its signal; ` +
        `pass options.signal to the operation, on every attempt, so it can cancel its own work.`,
    );
  }
  abort();
  // A signal the learner derived (AbortSignal.any) aborts in its host first; let it say so.
  await ticks(run.host);
  const missed = received.findIndex((sig) => (sig as AbortSignal).aborted !== true);
  if (missed >= 0) {
    t.fail(`${ctx}: the signal that attempt ${missed + 1} received did not report the abort; pass options.signal itself to the operation.`);
  }
  // The attempt fails as cancelled I/O would: with the signal's reason, or with its own error.
  const thrown = where === "middle" && t.rng.next() < 0.5 ? controller.signal.reason : own;
  const how =
    thrown === own
      ? `, and that attempt then threw its own error ${show(own)}${where === "fatal" ? " (which isRetryable refuses)" : ""}`
      : ", and that attempt then failed with the signal's reason";
  run.held!.reject(thrown);
  await run.until(
    () => run.settled !== null,
    () => `${ctx}${how}; retry() did not settle within ${REACT_MS / 1000} s while the clock stood still. Do not sleep once the signal is aborted.`,
  );
  expectAbortRejection(t, run, controller.signal.reason, ctx + how + " (check the signal first: an aborted call rejects with signal.reason, whatever the attempt threw)");
  await run.settle();
  if (run.attempts.length !== k) {
    t.fail(`${ctx}: retry() still made another attempt (${run.attempts.length} in all, expected ${k}). Nothing may start after an abort.`);
  }
}

// ---------------------------------------------------------------------------------------------

export default defineGrader<Submission>({
  exports: { retry: "function" },
  // retry() is a function of its arguments: one host serves every check (a fresh one after a failure).
  shareLearnerHost: true,
  checks: [
    {
      name: "a first-try success returns its value without sleeping",
      hint: "Call the operation first; only a failure leads to a delay.",
      timeoutMs: 15000,
      async run(t) {
        for (const [jitter, falsy] of t.rng.shuffle([["none", false], ["full", true], [t.rng.pick(["none", "full"] as const), undefined]] as const)) {
          const plan: Plan = {
            maxAttempts: t.rng.int(1, 5),
            baseDelayMs: t.rng.int(100, 2000),
            maxDelayMs: t.rng.int(5000, 30000),
            jitter,
            randoms: randoms(t.rng, 10),
            steps: [falsy === undefined ? { ok: true, value: undefined } : success(t.rng, 1, falsy)],
          };
          const run = await play(t, plan);
          if (jitter === "full" && run.randomCalls !== 0) {
            t.fail(`With ${showPlan(plan)}, the first attempt succeeded yet random() was called ${run.randomCalls} time(s); a delay is only computed after a failure.`);
          }
        }
      },
    },
    {
      name: "without jitter, the delay after failure n is baseDelayMs × 2^(n−1)",
      hint: "The first delay is the base itself, then it doubles: base, 2×base, 4×base, … Count failures from 1.",
      timeoutMs: 15000,
      async run(t) {
        for (let i = 0; i < 3; i++) {
          const maxAttempts = t.rng.int(5, 7);
          const baseDelayMs = t.rng.int(50, 3000);
          const okAt = i === 0 ? null : t.rng.int(4, maxAttempts);
          await play(t, {
            maxAttempts,
            baseDelayMs,
            // Far above anything reached: this check is about the doubling alone.
            maxDelayMs: baseDelayMs * 2 ** maxAttempts * t.rng.int(1, 3),
            jitter: "none",
            randoms: randoms(t.rng, 20),
            steps: steps(t.rng, maxAttempts, okAt, "exp"),
          });
        }
      },
    },
    {
      name: "the delay is capped at maxDelayMs and then held there",
      hint: "Take the minimum of the doubled delay and maxDelayMs on every retry, not only once.",
      timeoutMs: 15000,
      async run(t) {
        // A cap between two doublings, a cap on a doubling, and a cap below the base.
        const j = t.rng.int(2, 4);
        const b1 = t.rng.int(100, 900);
        const j2 = t.rng.int(1, 3);
        const b2 = t.rng.int(100, 900);
        const b3 = t.rng.int(2000, 5000);
        const plans: [number, number, number][] = t.rng.shuffle([
          [b1, b1 * 2 ** j + t.rng.int(1, b1 - 1), j + 2 + t.rng.int(2, 3)],
          [b2, b2 * 2 ** j2, j2 + 4 + t.rng.int(0, 2)],
          [b3, t.rng.int(500, b3 - 1), t.rng.int(3, 5)],
          // Held for dozens of retries: 2^31 and beyond overflow 32-bit integer arithmetic (the seed's (int)Math.Pow).
          [t.rng.int(1, 9), t.rng.int(20_000, 60_000), t.rng.int(36, 40)],
        ]);
        for (const [baseDelayMs, maxDelayMs, maxAttempts] of plans) {
          await play(t, {
            maxAttempts,
            baseDelayMs,
            maxDelayMs,
            jitter: "none",
            randoms: randoms(t.rng, 20),
            steps: steps(t.rng, maxAttempts, null, "cap"),
          });
        }
      },
    },
    {
      name: "full jitter: each delay is floor(random() × its capped delay), one random() call per delay",
      hint: "Compute the capped exponential delay first, then draw once: Math.floor(options.random() * capped). Never Math.random().",
      timeoutMs: 15000,
      async run(t) {
        for (let i = 0; i < 3; i++) {
          const maxAttempts = t.rng.int(5, 8);
          const baseDelayMs = t.rng.int(100, 2000);
          await play(t, {
            maxAttempts,
            baseDelayMs,
            maxDelayMs: baseDelayMs * 2 ** t.rng.int(2, 4) + t.rng.int(0, 99),
            jitter: "full",
            randoms: randoms(t.rng, 3 * maxAttempts + 10),
            steps: steps(t.rng, maxAttempts, i === 2 ? maxAttempts : null, "jit"),
          });
        }
      },
    },
    {
      name: "full jitter stays within [0, maxDelayMs) once the doubling passes the cap",
      hint: "Jitter is drawn below the capped delay; capping after the draw (or drawing above the cap) keeps every late delay at the maximum.",
      timeoutMs: 15000,
      async run(t) {
        const maxAttempts = t.rng.int(8, 10);
        const baseDelayMs = t.rng.int(1000, 3000);
        const plan: Plan = {
          maxAttempts,
          baseDelayMs,
          maxDelayMs: baseDelayMs * t.rng.int(2, 3) + t.rng.int(1, 999),
          jitter: "full",
          randoms: randoms(t.rng, 3 * maxAttempts + 10, 0.35, 0.999),
          steps: steps(t.rng, maxAttempts, null, "bound"),
        };
        const run = new Run(t, await t.learnerHost(), plan);
        run.start();
        await run.drive();
        const over = run.clock.requests.find((r) => r.ms < 0 || r.ms >= plan.maxDelayMs);
        if (over) {
          const onTop = over.ms >= plan.maxDelayMs && run.clock.requests.every((r, i) => r.ms >= cappedDelay(plan, i + 1));
          t.fail(
            `With ${showPlan(plan)}, your code slept ${over.ms} ms; with full jitter every delay is in [0, ${plan.maxDelayMs}) ms ` +
              `(random() returned values in [0.35, 0.999))` +
              (onTop ? ": every delay was at or above its capped value, so the jitter was drawn on top of the cap instead of below it." : "."),
          );
        }
        run.verify(model(plan));
      },
    },
    {
      name: "after maxAttempts failures, the last attempt's error itself is rethrown",
      hint: "Keep the error of the attempt that just failed and throw that very value when no attempt is left: no wrapper, not the first one.",
      timeoutMs: 15000,
      async run(t) {
        const counts = t.rng.shuffle([1, t.rng.int(2, 3), t.rng.int(4, 6)]);
        for (const maxAttempts of counts) {
          const s = steps(t.rng, maxAttempts, null, "last");
          // The last value is sometimes not an Error at all.
          if (t.rng.next() < 0.5) s[maxAttempts - 1] = failure(t.rng, maxAttempts, "last", t.rng.pick(["object", "string"] as const));
          await play(t, {
            maxAttempts,
            baseDelayMs: t.rng.int(100, 1000),
            maxDelayMs: t.rng.int(2000, 20000),
            jitter: t.rng.pick(["none", "full"] as const),
            randoms: randoms(t.rng, 3 * maxAttempts + 10),
            steps: s,
          });
        }
      },
    },
    {
      name: "no sleep follows the final failed attempt",
      hint: "Decide whether another attempt is allowed before you sleep, not after.",
      timeoutMs: 15000,
      async run(t) {
        for (let i = 0; i < 2; i++) {
          const maxAttempts = t.rng.int(2, 4);
          await play(t, {
            maxAttempts,
            baseDelayMs: t.rng.int(5000, 10000),
            maxDelayMs: 60_000,
            jitter: "none",
            randoms: randoms(t.rng, 20),
            steps: steps(t.rng, maxAttempts, null, "final"),
          });
        }
      },
    },
    {
      name: "a success on attempt k returns its value after exactly k−1 sleeps",
      hint: "Return the operation's value as it is, even when it is 0, \"\", null or undefined.",
      timeoutMs: 15000,
      async run(t) {
        // An object (checked by identity), undefined, another falsy value, and an object again.
        for (const kind of t.rng.shuffle(["object", "undefined", "falsy", "object"] as const)) {
          const maxAttempts = t.rng.int(3, 6);
          const k = t.rng.int(2, maxAttempts);
          const s = steps(t.rng, maxAttempts, k, "ok", kind === "falsy");
          if (kind === "undefined") s[k - 1] = { ok: true, value: undefined };
          await play(t, {
            maxAttempts,
            baseDelayMs: t.rng.int(100, 2000),
            maxDelayMs: t.rng.int(3000, 20000),
            jitter: t.rng.pick(["none", "full"] as const),
            randoms: randoms(t.rng, 3 * maxAttempts + 10),
            steps: s,
          });
        }
      },
    },
    {
      name: "a non-retryable error is rethrown at once, without sleeping",
      hint: "Ask options.isRetryable(error) about each failure (default: retry everything); when it says no, throw that error right away.",
      timeoutMs: 15000,
      async run(t) {
        // The refused value is an Error, a plain object and a string, one run each: code that
        // asks isRetryable only about Error instances must fail here on every seed.
        const kinds = t.rng.shuffle(["error", "object", "string"] as const);
        for (const [i, kind] of kinds.entries()) {
          const k = i === 0 ? 1 : t.rng.int(2, 4);
          const maxAttempts = k + t.rng.int(2, 3);
          const s = steps(t.rng, maxAttempts, null, "retryable");
          const fatal = failure(t.rng, k, "fatal", kind);
          s[k - 1] = fatal;
          if (fatal.ok) throw new Error("grader bug");
          await play(
            t,
            {
              maxAttempts,
              baseDelayMs: t.rng.int(500, 3000),
              maxDelayMs: 30_000,
              jitter: t.rng.pick(["none", "full"] as const),
              randoms: randoms(t.rng, 3 * maxAttempts + 10),
              steps: s,
              fatal: new Set([fatal.error]),
            },
            ` and an isRetryable() that refuses what attempt ${k} throws`,
          );
        }
      },
    },
    {
      name: "an abort during a backoff sleep rejects at once with signal.reason, and no attempt follows",
      hint: "Pass options.signal to clock.sleep: the sleep then rejects with signal.reason the moment the caller aborts.",
      timeoutMs: 15000,
      async run(t) {
        const maxAttempts = t.rng.int(5, 7);
        const k = t.rng.int(1, maxAttempts - 2);
        const plan: Plan = {
          maxAttempts,
          baseDelayMs: t.rng.int(1000, 5000),
          maxDelayMs: 60_000,
          jitter: t.rng.pick(["none", "full"] as const),
          randoms: randoms(t.rng, 3 * maxAttempts + 10, 0.2, 0.999),
          steps: steps(t.rng, maxAttempts, null, "sleep-abort"),
        };
        const { controller, abort, label } = newAbort(t.rng);
        const run = new Run(t, await t.learnerHost(), plan, controller.signal);
        run.start();
        // Play normally until attempt k has failed and its sleep is running.
        await run.drive(() => run.attempts.length === k && run.clock.nextWake() !== null);
        if (run.settled) {
          const ended = run.settled.ok ? `resolved with ${show(run.settled.value)}` : `rejected with ${show(run.settled.error)}`;
          t.fail(`With ${showPlan(plan)} and a signal, retry() ${ended} after ${run.attempts.length} attempt(s), before the grader aborted; every attempt so far failed with a retryable error, so it must keep retrying.`);
        }
        const frozen = run.clock.now();
        abort();
        const ctx = `With ${showPlan(plan)}, the caller called ${label} while the sleep after attempt ${k} was running (virtual time ${frozen} ms)`;
        await run.until(
          () => run.settled !== null,
          () =>
            `${ctx}, and retry() did not settle within ${REACT_MS / 1000} s while the clock stood still. ` +
            `An abort must end the sleep at once: pass the signal to clock.sleep(ms, signal).`,
        );
        expectAbortRejection(t, run, controller.signal.reason, ctx);
        // The sleep itself must have ended with the abort, not be left running under a race.
        const open = () => run.clock.requests.filter((r) => !r.done);
        await run.until(
          () => open().length === 0,
          () =>
            `${ctx}: retry() rejected, but the sleep of ${open()[0]!.ms} ms it requested on the clock was still running ${REACT_MS / 1000} s later, while the clock stood still. ` +
            `Pass the signal to clock.sleep(ms, signal) so the abort ends the sleep itself; racing a sleep without the signal against an abort listener leaves a timer running after retry() has settled.`,
        );
        await run.settle();
        if (run.attempts.length !== k) {
          t.fail(`${ctx}: retry() rejected, but the operation was still called afterwards (${run.attempts.length} attempts in all, expected ${k}). Nothing may start after an abort.`);
        }
      },
    },
    {
      name: "an already-aborted signal makes no attempt",
      hint: "Check the signal before the first attempt too: signal.throwIfAborted().",
      timeoutMs: 15000,
      async run(t) {
        const maxAttempts = t.rng.int(2, 5);
        const plan: Plan = {
          maxAttempts,
          baseDelayMs: t.rng.int(100, 2000),
          maxDelayMs: 30_000,
          jitter: t.rng.pick(["none", "full"] as const),
          randoms: randoms(t.rng, 3 * maxAttempts + 10),
          steps: steps(t.rng, maxAttempts, t.rng.next() < 0.5 ? 1 : null, "pre-abort"),
        };
        const { controller, abort, label } = newAbort(t.rng);
        abort();
        const run = new Run(t, await t.learnerHost(), plan, controller.signal);
        run.start();
        const ctx = `With ${showPlan(plan)} and a signal that was already aborted (${label}) when retry() was called`;
        await run.until(
          () => run.settled !== null,
          () => `${ctx}, retry() did not settle within ${REACT_MS / 1000} s.`,
        );
        await run.settle();
        if (run.attempts.length) {
          t.fail(`${ctx}, your code still called the operation ${run.attempts.length} time(s); a cancelled call must not start any work.`);
        }
        expectAbortRejection(t, run, controller.signal.reason, ctx);
      },
    },
    {
      name: "an abort during an attempt reaches the operation's signal, and no retry follows",
      hint: "Give the operation options.signal as its second argument; after a failure, check the signal before deciding to sleep and retry.",
      timeoutMs: 15000,
      async run(t) {
        // Three runs, in seeded order: the abort hits a middle attempt that then fails (with the
        // reason or its own error), the LAST attempt (whose own error must not win over the reason),
        // and a middle attempt whose own error isRetryable() refuses (nor may that one).
        for (const where of t.rng.shuffle(["middle", "last", "fatal"] as const)) await abortInFlight(t, where);
      },
    },
    {
      name: "time moves only through the injected clock",
      hint: "No setTimeout, no Date.now(), no timer library: await clock.sleep(ms, signal) and nothing else.",
      timeoutMs: 15000,
      async run(t) {
        // Delays of tens of seconds: a real timer would still be running long after the grader gave up.
        const baseDelayMs = t.rng.int(20_000, 40_000);
        const plan: Plan = {
          maxAttempts: 3,
          baseDelayMs,
          maxDelayMs: baseDelayMs * 4,
          jitter: "none",
          randoms: randoms(t.rng, 20),
          steps: steps(t.rng, 3, 3, "clock"),
        };
        const started = performance.now();
        await play(t, plan);
        const elapsed = performance.now() - started;
        if (elapsed > 2 * REACT_MS) {
          t.fail(`With ${showPlan(plan)}, retry() took ${Math.round(elapsed)} ms of real time for ${baseDelayMs * 3} ms of virtual delays; wait only on the clock.`);
        }
      },
    },
  ],
});
