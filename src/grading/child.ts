/**
 * The grading child: runs one grader against one submission and reports over fd 3.
 * The engine starts it in its own process group, so a hung or crashed submission can be
 * killed whole without taking the CLI with it.
 */
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { Broker } from "../catalog/types.ts";
import { CheckFailure, LabError, isInfrastructureError } from "../kit/fail.ts";
import type { CheckContext, Grader } from "../kit/grader.ts";
import { KafkaKit, deleteKafkaResources } from "../kit/kafka.ts";
import { Namespace } from "../kit/names.ts";
import { RabbitKit, deleteRabbitResources } from "../kit/rabbit.ts";
import { createRng, deriveSeed } from "../kit/rng.ts";
import { CrashHarness } from "../kit/crash.ts";
import { ChaosProxy } from "../kit/proxy.ts";
import { amqpHostPort } from "../config.ts";
import { describe } from "../kit/describe.ts";
import { probeBroker } from "../brokers/probe.ts";
import { send, type AbortReason } from "./protocol.ts";
import type { CheckResult, Status } from "./result.ts";

export interface ChildConfig {
  exercise: string;
  brokers: Broker[];
  graderPath: string;
  submissionPath: string;
  seed: number;
  amqpUrl: string;
  kafkaBrokers: string[];
  runId: string;
  tmpRoot: string;
  /** Epoch ms when the engine will SIGKILL this process; checks stop short of it. */
  deadline: number;
}

const DEFAULT_CHECK_TIMEOUT_MS = 20_000;

const config = JSON.parse(process.env.MSGLAB_CHILD_CONFIG ?? "null") as ChildConfig | null;
if (!config) {
  console.error("msglab's grading child must be started by the engine.");
  process.exit(2);
}

let currentCheck: string | null = null;
const realExit = process.exit.bind(process);
// A submission that calls process.exit would end grading silently; record who did it first.
process.exit = ((code?: number | string | null) => {
  send({ type: "exit-called", code: Number(code ?? 0), during: currentCheck });
  realExit(typeof code === "number" ? code : 0);
}) as typeof process.exit;

// Errors thrown in the learner's callbacks outside any awaited promise (an event handler, a
// stray rejection) would crash the process; charge them to the running check instead.
let escaped: unknown[] = [];
process.on("uncaughtException", (e) => escaped.push(e));
process.on("unhandledRejection", (e) => escaped.push(e));

function abort(reason: AbortReason, message: string): never {
  send({ type: "abort", reason, message });
  return realExit(0);
}

function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name === "Error" ? "" : e.name + ": "}${e.message}`;
  return describe(e);
}

async function loadSubmission(path: string): Promise<Record<string, unknown>> {
  try {
    return (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (e) {
    const err = e as Error & { code?: string };
    const text = String(err?.message ?? e);
    if (err?.name === "TransformError" || /Transform failed/.test(text) || err instanceof SyntaxError) {
      // esbuild's message already says file:line:col and what it expected.
      const detail = text.replace(/^Transform failed with \d+ errors?:\n?/, "").trim();
      abort("syntax", `Syntax error in your file: ${detail}. Fix it and run again.`);
    }
    if (err?.code === "ERR_MODULE_NOT_FOUND" || err?.code === "MODULE_NOT_FOUND") {
      abort("load", `Your file could not be loaded: ${text.split("\n")[0]}. Check the import paths; the lab provides amqplib, kafkajs and better-sqlite3.`);
    }
    abort("load", `Your file threw while it was being loaded: ${errorText(e)}. Code at the top level runs on import; move it into the exported functions.`);
  }
}

function checkExports(mod: Record<string, unknown>, spec: Record<string, string>): void {
  const problems: string[] = [];
  for (const [name, kind] of Object.entries(spec)) {
    const v = mod[name];
    if (v === undefined) problems.push(`\`${name}\` is not exported`);
    else if ((kind === "function" || kind === "class") && typeof v !== "function") problems.push(`\`${name}\` must be a ${kind} but is ${typeof v}`);
    else if (kind === "object" && (typeof v !== "object" || v === null)) problems.push(`\`${name}\` must be an object but is ${typeof v}`);
  }
  if (problems.length) {
    abort("missing-export", `Your file does not provide what the grader needs: ${problems.join("; ")}. Keep the exported names from the scaffold (\`export function …\`).`);
  }
}

class CheckTimeout extends LabError {}

async function runCheck<S>(grader: Grader<S>, index: number, submission: S, cfg: ChildConfig): Promise<CheckResult> {
  const check = grader.checks[index]!;
  const started = performance.now();
  const seed = deriveSeed(cfg.seed, check.name);
  const names = new Namespace(`msglab.${cfg.runId}.c${index}`);
  const rabbit = new RabbitKit(cfg.amqpUrl);
  const kafka = new KafkaKit(cfg.kafkaBrokers, `msglab-${cfg.runId}`);
  const tmpDir = join(cfg.tmpRoot, `check-${index}`);
  mkdirSync(tmpDir, { recursive: true });
  const deferred: (() => unknown)[] = [];
  const workers = new CrashHarness(cfg.submissionPath);
  const ctx: CheckContext<S> = {
    submissionPath: cfg.submissionPath,
    workers,
    async proxy() {
      const proxy = await ChaosProxy.start(amqpHostPort(cfg.amqpUrl));
      deferred.push(() => proxy.close());
      return proxy;
    },
    submission,
    seed,
    rng: createRng(seed),
    names,
    rabbit,
    kafka,
    tmpDir,
    defer: (fn) => void deferred.push(fn),
    fail: (message) => {
      throw new CheckFailure(message);
    },
    async waitFor(condition, opts) {
      const until = Date.now() + opts.timeoutMs;
      for (;;) {
        if (await condition()) return;
        if (Date.now() > until) throw new CheckFailure(typeof opts.message === "function" ? opts.message() : opts.message);
        await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
      }
    },
    async within(what, ms, value) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CheckFailure(`${what} did not finish within ${ms} ms.`)), ms);
      });
      try {
        return await Promise.race([Promise.resolve(value), timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
  };

  let status: Status = "pass";
  let message: string | null = null;
  escaped = [];
  const budget = Math.min(check.timeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS, cfg.deadline - Date.now() - 1500);
  let timer: NodeJS.Timeout | undefined;
  try {
    if (budget <= 0) throw new CheckTimeout("The run's time limit was used up before this check could start.");
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new CheckTimeout(`Timed out after ${budget} ms: your code never finished (an await that never resolves, or a consumer that never calls back).`)),
        budget,
      );
    });
    await Promise.race([check.run(ctx), timeout]);
    if (escaped.length) {
      status = "fail";
      message = `An error escaped your code outside any awaited call: ${errorText(escaped[0])}. Catch it where it is thrown.`;
    }
  } catch (e) {
    if (e instanceof CheckFailure) {
      status = "fail";
      message = e.message;
    } else if (isInfrastructureError(e)) {
      status = "error";
      message = e instanceof LabError ? e.message : `A broker went away during the check: ${errorText(e)}. Run \`msglab doctor\`.`;
    } else {
      status = "fail";
      message = `Your code threw: ${errorText(e)}`;
    }
  } finally {
    clearTimeout(timer);
  }
  // Workers die first, so nothing of the learner's is still consuming while queues are deleted.
  await within(5000, workers.killAll()).catch(() => {});
  await teardown(deferred, rabbit, kafka, names, cfg);
  rmSync(tmpDir, { recursive: true, force: true });
  return {
    name: check.name,
    status,
    message,
    hint: status === "fail" ? check.hint : null,
    durationMs: Math.round(performance.now() - started),
  };
}

async function teardown(deferred: (() => unknown)[], rabbit: RabbitKit, kafka: KafkaKit, names: Namespace, cfg: ChildConfig): Promise<void> {
  for (const fn of deferred.reverse()) {
    try {
      await within(2000, fn());
    } catch {
      // Teardown is best effort; the engine deletes what is left by name.
    }
  }
  await within(3000, rabbit.closeAll());
  await within(5000, kafka.closeAll());
  const released = [
    ...(await within(3000, deleteRabbitResources(cfg.amqpUrl, names.created)).catch(() => [] as string[])),
    ...(await within(8000, deleteKafkaResources(cfg.kafkaBrokers, names.created)).catch(() => [] as string[])),
  ];
  for (const r of names.created) if (released.includes(r.name)) send({ type: "released", kind: r.kind, name: r.name });
}

function within<T>(ms: number, value: T | Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    Promise.resolve(value),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("teardown timed out")), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function main(cfg: ChildConfig): Promise<void> {
  for (const broker of cfg.brokers) {
    const problem = await probeBroker(broker, { amqpUrl: cfg.amqpUrl, kafkaBrokers: cfg.kafkaBrokers });
    if (problem) abort("broker", problem);
  }
  let grader: Grader<Record<string, unknown>>;
  try {
    grader = ((await import(pathToFileURL(cfg.graderPath).href)) as { default: Grader<Record<string, unknown>> }).default;
  } catch (e) {
    abort("grader", `The grader for ${cfg.exercise} failed to load (a bug in msglab, please report it): ${errorText(e)}`);
  }
  send({ type: "plan", checks: grader.checks.map((c) => c.name) });
  const submission = await loadSubmission(cfg.submissionPath);
  checkExports(submission, grader.exports);
  for (let i = 0; i < grader.checks.length; i++) {
    const check = grader.checks[i]!;
    currentCheck = check.name;
    send({ type: "check-start", index: i, name: check.name });
    const result = await runCheck(grader, i, submission, cfg);
    send({ type: "check-end", index: i, result });
    currentCheck = null;
  }
  send({ type: "done" });
  // The learner's code may leave sockets and timers behind; the run is over regardless.
  realExit(0);
}

await main(config);
