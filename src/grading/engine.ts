import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Exercise } from "../catalog/types.ts";
import type { LabConfig } from "../config.ts";
import { usageError } from "../errors.ts";
import { deleteKafkaResources } from "../kit/kafka.ts";
import { deleteRabbitResources } from "../kit/rabbit.ts";
import { newSeed } from "../kit/rng.ts";
import { LAB_ROOT } from "../paths.ts";
import { builtPath, labBuild } from "../build/lab-build.mjs";
import { deleteVhost } from "../brokers/rabbit-admin.ts";
import type { ChildConfig } from "./child.ts";
import { sandboxMode, type SandboxMode } from "./sandbox.ts";
import type { ChildMessage, ResourceKind } from "./protocol.ts";
import { overallStatus, RESULT_VERSION, type CheckResult, type RunResult } from "./result.ts";

export interface GradeOptions {
  config: LabConfig;
  seed?: number | undefined;
  /** Overrides the exercise's hard timeout, in ms. */
  timeoutMs?: number | undefined;
  /** Only these checks (names or 1-based numbers); all when absent. */
  only?: string[] | undefined;
  /** Memory cap of each submission host, in MiB (default: the exercise's, else 512). */
  memoryMb?: number | undefined;
  /** Forces a sandbox mode (tests run the hostile suite under both). */
  sandbox?: SandboxMode | undefined;
  /** Stops the grading early (Ctrl-C): the result is `interrupted`. */
  signal?: AbortSignal | undefined;
  /** Where the grading's temp folder goes (default: the OS temp folder). */
  tmpParent?: string | undefined;
}

const OUTPUT_TAIL = 4000;
export const DEFAULT_MEMORY_MB = 512;

/**
 * Grades one submission against one exercise in a child process with a hard timeout.
 * Always resolves to a result: crashes, hangs and broken files become `error` results,
 * and whatever the run created on the brokers is deleted afterwards.
 */
export async function gradeSubmission(exercise: Exercise, submissionPath: string, opts: GradeOptions): Promise<RunResult> {
  const submission = resolve(submissionPath);
  if (!existsSync(submission) || !statSync(submission).isFile()) {
    throw usageError(`There is no file at ${submission}. Pass the path of your .ts file to --file.`);
  }
  const seed = opts.seed ?? newSeed();
  const runId = randomBytes(4).toString("hex");
  const tmpRoot = join(opts.tmpParent ?? tmpdir(), `msglab-${runId}`);
  mkdirSync(tmpRoot, { recursive: true });
  const timeoutMs = opts.timeoutMs ?? exercise.timeoutMs;
  const started = performance.now();
  const build = await labBuild();
  const childConfig: ChildConfig = {
    exercise: exercise.id,
    brokers: exercise.brokers,
    graderPath: builtPath(build, exercise.graderPath),
    submissionPath: submission,
    seed,
    amqpUrl: opts.config.amqpUrl,
    kafkaBrokers: opts.config.kafkaBrokers,
    runId,
    tmpRoot,
    deadline: Date.now() + timeoutMs,
    hostMain: join(build, "host", "main.js"),
    labRoot: LAB_ROOT,
    nodeModules: join(LAB_ROOT, "node_modules"),
    sandbox: opts.sandbox ?? sandboxMode(),
    memoryMb: opts.memoryMb ?? exercise.memoryMb ?? DEFAULT_MEMORY_MB,
    only: opts.only ?? null,
  };

  const messages: ChildMessage[] = [];
  let output = "";
  const child = spawn(process.execPath, [join(build, "lab", "src", "grading", "child.js")], {
    cwd: tmpRoot,
    // Its own process group: on a timeout the whole tree goes, hosts included. Its stdin is a
    // pipe from here: when this process dies, the child sees it close and cleans up at once.
    detached: true,
    stdio: ["pipe", "pipe", "pipe", "pipe"],
    env: {
      ...process.env,
      MSGLAB_CHILD: "1",
      MSGLAB_CHILD_CONFIG: JSON.stringify(childConfig),
      KAFKAJS_NO_PARTITIONER_WARNING: "1",
      NODE_OPTIONS: "",
    },
  });
  child.stdin!.on("error", () => {});
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-OUTPUT_TAIL);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  let pending = "";
  (child.stdio[3] as NodeJS.ReadableStream).on("data", (chunk: Buffer) => {
    pending += chunk.toString();
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        messages.push(JSON.parse(line) as ChildMessage);
      } catch {
        // Only the child writes fd 3; a torn line means it died mid-write.
      }
    }
  });

  let timedOut = false;
  const killGroup = () => {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      // Already gone.
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup();
  }, timeoutMs);
  // Interrupted (Ctrl-C): the child cleans up and exits; if it lingers, the group goes.
  let interrupted = false;
  let hardKill: NodeJS.Timeout | undefined;
  const onInterrupt = () => {
    if (interrupted) return;
    interrupted = true;
    try {
      child.kill("SIGTERM");
    } catch {
      // gone
    }
    hardKill = setTimeout(killGroup, 2500);
  };
  if (opts.signal?.aborted) onInterrupt();
  opts.signal?.addEventListener("abort", onInterrupt, { once: true });
  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => {
    child.once("close", (code, signal) => done({ code, signal }));
  });
  clearTimeout(timer);
  clearTimeout(hardKill);
  killGroup(); // stray grandchildren of a finished child
  opts.signal?.removeEventListener("abort", onInterrupt);

  await cleanupLeftovers(messages, opts.config);
  rmSync(tmpRoot, { recursive: true, force: true });

  const usage = messages.find((m) => m.type === "abort" && m.reason === "usage");
  if (usage && usage.type === "abort") throw usageError(usage.message);
  const { checks, message, labError } = interpret(messages, { timedOut, timeoutMs, exit, output, interrupted });
  const status = overallStatus(checks);
  const warnings = messages.flatMap((m) => (m.type === "warning" ? [m.message] : []));
  return {
    version: RESULT_VERSION,
    status,
    message: status === "error" ? (message ?? summary(checks)) : null,
    tests: checks,
    checks,
    exercise: exercise.id,
    submission,
    runId,
    summary: message && status === "error" ? firstLine(message) : summary(checks),
    seed,
    score: checks.filter((c) => c.status === "pass").length,
    maxScore: checks.length,
    durationMs: Math.round(performance.now() - started),
    output: output.trim() ? output.trim() : null,
    warnings,
    sandbox: childConfig.sandbox,
    labError,
    ...(interrupted ? { interrupted: true } : {}),
  };
}


function summary(checks: CheckResult[]): string {
  const passed = checks.filter((c) => c.status === "pass").length;
  const firstError = checks.find((c) => c.status === "error");
  // An error run should say why at the top, not only inside one of the checks.
  const why = firstError ? `; "${firstError.name}" could not run: ${firstError.message ?? "no reason given"}` : "";
  return `${passed}/${checks.length} checks passed${why}`;
}

/** Turns the child's messages and its exit into per-check results, in the grader's order. */
export function interpret(
  messages: ChildMessage[],
  run: { timedOut: boolean; timeoutMs: number; exit: { code: number | null; signal: NodeJS.Signals | null }; output: string; interrupted?: boolean },
): { checks: CheckResult[]; message: string | null; labError: boolean } {
  const plan = messages.find((m) => m.type === "plan")?.checks ?? [];
  const ended = new Map<string, CheckResult>();
  let running: string | null = null;
  for (const m of messages) {
    if (m.type === "check-start") running = m.name;
    if (m.type === "check-end") {
      ended.set(m.result.name, m.result);
      running = null;
    }
  }
  const abort = messages.find((m) => m.type === "abort");
  const done = messages.some((m) => m.type === "done");

  let message: string | null = null;
  // Whose problem an early end was: a broker or the lab's own failure is regraded, a learner's not.
  let cause: "lab" | "submission" = "submission";
  if (run.interrupted || messages.some((m) => m.type === "interrupted")) message = "Interrupted (Ctrl-C): grading stopped; nothing was recorded.";
  else if (abort) {
    message = abort.message;
    if (abort.reason === "broker" || abort.reason === "grader") cause = "lab";
  }
  else if (run.timedOut) {
    message = `Grading timed out after ${run.timeoutMs} ms${running ? ` during "${running}"` : ""}: something never returns (a busy loop, or a promise that never settles). Find the loop or the missing resolve; \`--timeout\` raises the limit.`;
  } else if (!done) {
    const how = run.exit.signal ? `was killed by ${run.exit.signal}` : `exited with code ${run.exit.code}`;
    const tail = lastLines(run.output, 6);
    message = `The grading process ${how}${running ? ` during "${running}"` : ""} before it finished.${tail ? ` Last output:\n${tail}` : ""}`;
    // Submissions never run in the grading process: if it died, the lab (or the machine) failed.
    cause = "lab";
  }

  const labError = (errors: CheckResult[]) => errors.some((c) => c.status === "error" && c.cause === "lab");
  if (message && plan.length === 0) {
    const only: CheckResult = { name: "load submission", status: "error", message, output: null, test_code: null, hint: null, durationMs: 0, cause };
    return { checks: [only], message, labError: cause === "lab" };
  }
  const checks = plan.map<CheckResult>((name) => {
    const r = ended.get(name);
    if (r) return r;
    return {
      name,
      status: "error",
      message: name === running || !message ? message ?? "This check did not run." : `Not run: ${firstLine(message)}`,
      output: null,
      test_code: null,
      hint: null,
      durationMs: 0,
      cause,
    };
  });
  return { checks, message, labError: labError(checks) };
}

function firstLine(s: string): string {
  return s.split("\n")[0]!;
}

function lastLines(s: string, n: number): string {
  return s.trim().split("\n").slice(-n).join("\n");
}

/** Deletes what the child announced but did not report as released (it died, or timed out). */
async function cleanupLeftovers(messages: ChildMessage[], config: LabConfig): Promise<void> {
  const released = new Set(messages.filter((m) => m.type === "released").map((m) => `${m.kind}:${m.name}`));
  const left: { kind: ResourceKind; name: string }[] = [];
  for (const m of messages) {
    if (m.type === "resource" && !released.has(`${m.kind}:${m.name}`)) left.push({ kind: m.kind, name: m.name });
  }
  if (left.length === 0) return;
  const vhosts = left.filter((r) => r.kind === "vhost").map((r) => deleteVhost(config.amqpUrl, r.name));
  await Promise.allSettled([...vhosts, deleteRabbitResources(config.amqpUrl, left), deleteKafkaResources(config.kafkaBrokers, left)]);
}
