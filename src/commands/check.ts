import { appendFileSync, existsSync, writeFileSync } from "node:fs";
import { loadCourse } from "../catalog/load.ts";
import type { Exercise } from "../catalog/types.ts";
import { loadConfig } from "../config.ts";
import { usageError } from "../errors.ts";
import { gradeSubmission } from "../grading/engine.ts";
import type { RunResult } from "../grading/result.ts";
import { learnerFile } from "../workspace/copies.ts";
import { parseMemory, parseSandbox, parseSeed, parseTimeout, type GradeFlags } from "./grade-common.ts";
import { interruptedError, interruptSignal } from "../interrupt.ts";

export type Reporter = "pretty" | "json" | "junit" | "github-classroom";
export const REPORTERS: Reporter[] = ["pretty", "json", "junit", "github-classroom"];

export interface CheckOptions extends GradeFlags {
  solutions?: boolean;
  reporter?: string;
  out?: string;
}

/**
 * Grades every started exercise (or, with --solutions, every reference) one after another.
 * One exercise's error never stops the others: each run is its own child process.
 */
export async function check(opts: CheckOptions): Promise<number> {
  const reporter = (opts.reporter ?? "pretty") as Reporter;
  if (!REPORTERS.includes(reporter)) throw usageError(`--reporter must be ${REPORTERS.join(", ")} (got "${opts.reporter}").`);
  const config = loadConfig(opts);
  const seed = parseSeed(opts.seed);
  const timeoutMs = parseTimeout(opts.timeout);
  const memoryMb = parseMemory(opts.memory);
  const sandbox = parseSandbox(opts.sandbox);
  const signal = interruptSignal();
  const course = loadCourse();
  const targets: { ex: Exercise; file: string }[] = opts.solutions
    ? course.map((ex) => ({ ex, file: ex.solutionPath }))
    : course.map((ex) => ({ ex, file: learnerFile(config.workspace, ex) })).filter((t) => existsSync(t.file));
  const ui = reporter === "pretty" ? await import("../ui/output.ts") : null;
  if (targets.length === 0) {
    ui?.printLine(`Nothing to check yet: no exercise has been started in ${config.workspace}. Start one with \`msglab run <id>\`.`);
    return 0;
  }

  const results: RunResult[] = [];
  const started = performance.now();
  // Each result is recorded as soon as it is known, so an interrupted check loses nothing graded.
  const store = opts.solutions ? null : await (await import("../workspace/progress.ts")).ProgressStore.open(config.workspace);
  try {
    for (const { ex, file } of targets) {
      const result = await gradeSubmission(ex, file, { config, seed, timeoutMs, memoryMb, sandbox, signal });
      // Ctrl-C: what was graded before stays recorded; the interrupted one is not an attempt.
      if (result.interrupted) throw interruptedError();
      results.push(result);
      store?.recordResult(result);
      if (ui) ui.printLine(ui.formatResult(result) + "\n");
    }
  } finally {
    store?.close();
  }

  await writeReport(reporter, results, opts.out);
  const passed = results.filter((r) => r.status === "pass").length;
  if (ui) {
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    const line = `${passed}/${results.length} exercises passed in ${secs} s`;
    ui.printLine(passed === results.length ? ui.style.ok(line) : ui.style.bad(line));
  }
  return passed === results.length ? 0 : 1;
}

/** The machine-readable reporters, shared by `run` and `check`. */
export async function writeReport(reporter: Reporter, one: RunResult | RunResult[], out: string | undefined): Promise<void> {
  const results = Array.isArray(one) ? one : [one];
  let text: string | null = null;
  // One grading (run) prints its result itself; several (check) an envelope around them.
  if (reporter === "json") text = (await import("../grading/reporters/json.ts")).toJson(one);
  if (reporter === "junit") text = (await import("../grading/reporters/junit.ts")).toJUnit(results);
  if (reporter === "github-classroom") {
    const { toClassroom, classroomOutputLine } = await import("../grading/reporters/github-classroom.ts");
    const payload = toClassroom(results);
    text = JSON.stringify(payload, null, 2) + "\n";
    // In a GitHub Actions step, also the step's `result` output, which the reporter action decodes.
    if (process.env.GITHUB_OUTPUT) appendFileSync(process.env.GITHUB_OUTPUT, classroomOutputLine(payload));
  }
  if (text === null) return;
  if (out) writeFileSync(out, text);
  else process.stdout.write(text);
}
