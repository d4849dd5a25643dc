import { readFileSync } from "node:fs";
import { findExercise } from "../catalog/load.ts";
import { loadConfig } from "../config.ts";
import { gradeSubmission } from "../grading/engine.ts";
import type { RunResult } from "../grading/result.ts";
import { ensureLearnerCopy, learnerFile } from "../workspace/copies.ts";
import { parseMemory, parseOnly, parseSandbox, parseSeed, parseTimeout, type GradeFlags } from "./grade-common.ts";
import { interruptedError, interruptSignal } from "../interrupt.ts";
import { usageError } from "../errors.ts";
import { newSeed } from "../kit/rng.ts";

export interface RunOptions extends GradeFlags {
  file?: string;
  json?: boolean;
  watch?: boolean;
  repeat?: string;
  only?: string[];
  reporter?: string;
  out?: string;
}

/**
 * Grades one exercise. Without --file it grades the learner's copy in the workspace (made
 * from the scaffold on first run) and records the result; with --file it grades that file
 * and records nothing, which is how instructors and CI use it.
 */
export async function run(id: string, opts: RunOptions): Promise<number> {
  const config = loadConfig(opts);
  const ex = findExercise(id);
  const seed = parseSeed(opts.seed);
  const timeoutMs = parseTimeout(opts.timeout);
  const only = parseOnly(opts.only);
  const memoryMb = parseMemory(opts.memory);
  const sandbox = parseSandbox(opts.sandbox);
  const signal = interruptSignal();
  const { REPORTERS, writeReport } = await import("./check.ts");
  const reporter = (opts.json ? "json" : (opts.reporter ?? "pretty")) as (typeof REPORTERS)[number];
  if (!REPORTERS.includes(reporter)) throw usageError(`--reporter must be ${REPORTERS.join(", ")} (got "${opts.reporter}").`);
  if (reporter !== "pretty") opts.json = true;
  const grade = (s: number | undefined) => gradeSubmission(ex, file!, { config, seed: s, timeoutMs, only, memoryMb, sandbox, signal });
  const ui = opts.json ? null : await import("../ui/output.ts");

  let file = opts.file;
  if (!file) {
    file = learnerFile(config.workspace, ex);
    const created = ensureLearnerCopy(config.workspace, ex);
    if (ui && created) {
      ui.printLine(readFileSync(ex.briefPath, "utf8").trim());
      ui.printLine();
      ui.printLine(ui.style.ok(`Your copy is ready: ${file}`));
      ui.printLine(ui.style.dim("Edit it, then run this command again (or add --watch to re-grade on save)."));
      ui.printLine();
    }
  }

  const gradeOnce = async (): Promise<RunResult> => {
    if (ui) ui.printLine(ui.style.dim(`grading ${ex.id} …`));
    const result = await grade(seed);
    // An interrupted grading is not an attempt: nothing is recorded or printed as a verdict.
    if (result.interrupted) throw interruptedError();
    if (!opts.file && !only) {
      const { ProgressStore } = await import("../workspace/progress.ts");
      const store = await ProgressStore.open(config.workspace);
      try {
        store.recordResult(result);
      } finally {
        store.close();
      }
    }
    if (ui) {
      ui.printLine(ui.formatResult(result));
      if (result.status === "pass" && !opts.file) ui.printLine(ui.style.ok(`\nWell done. Next: \`msglab list\`, or \`msglab quiz ${ex.id}\` to check the concepts.`));
      else if (result.status === "fail") ui.printLine(ui.style.dim(`\nStuck? \`msglab hint ${ex.id}\` shows the next hint.`));
    } else await writeReport(reporter, result, opts.out);
    return result;
  };

  if (opts.repeat !== undefined)
    return repeat(
      opts.repeat,
      async (s) => {
        const r = await grade(s);
        if (r.interrupted) throw interruptedError();
        return r;
      },
      seed,
      opts.json === true,
    );

  if (!opts.watch) {
    const first = await gradeOnce();
    return first.status === "pass" ? 0 : 1;
  }
  const { watchFile } = await import("../workspace/watch.ts");
  // Watch mode ends with Ctrl-C: whatever was grading stops, and the exit says interrupted.
  await watchFile(file, async () => {
    try {
      await gradeOnce();
    } catch (e) {
      if (!signal.aborted) throw e;
    }
  }, signal);
  throw interruptedError();
}

/**
 * Grades N times with different seeds and reports "passed k/N" with the seeds that failed,
 * so flaky learner code shows up, and so does a flaky grader. Nothing is recorded.
 */
async function repeat(countText: string, grade: (seed: number) => Promise<RunResult>, firstSeed: number | undefined, json: boolean): Promise<number> {
  const n = Number(countText);
  if (!Number.isInteger(n) || n < 1 || n > 1000) throw usageError(`--repeat must be a whole number from 1 to 1000 (got "${countText}").`);
  const ui = json ? null : await import("../ui/output.ts");
  const runs: RunResult[] = [];
  for (let i = 0; i < n; i++) {
    const r = await grade(firstSeed === undefined ? newSeed() : (firstSeed + i) >>> 0);
    runs.push(r);
    if (ui) {
      const bad = r.tests.filter((c) => c.status !== "pass").map((c) => c.name);
      ui.printLine(`  ${String(i + 1).padStart(3)}/${n} ${r.status === "pass" ? ui.style.ok("pass ") : ui.style.bad(r.status.padEnd(5))} seed ${r.seed}  ${(r.durationMs / 1000).toFixed(1)} s${bad.length ? ui.style.dim("  " + bad.join("; ")) : ""}`);
    }
  }
  const passed = runs.filter((r) => r.status === "pass").length;
  if (json) process.stdout.write(JSON.stringify({ version: 2, exercise: runs[0]!.exercise, repeat: n, passed, runs }, null, 2) + "\n");
  else {
    const failed = runs.filter((r) => r.status !== "pass").map((r) => r.seed);
    ui!.printLine(`passed ${passed}/${n}` + (failed.length ? `; replay a failure with --seed ${failed[0]} (failing seeds: ${failed.join(", ")})` : ""));
  }
  return passed === n ? 0 : 1;
}
