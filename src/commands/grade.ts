/**
 * `msglab grade <roster>`: grades a whole class, student × exercise, in parallel, each grading in
 * its own sandboxed hosts, vhost, topics and folders. The gradebook (SQLite) records each result
 * as it lands, so a run can be stopped at any moment and resumed; grading again skips whatever
 * is unchanged since it was graded. `msglab grade merge <dir>…` joins the outputs of shards.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { loadCourse } from "../catalog/load.ts";
import type { Exercise } from "../catalog/types.ts";
import { loadConfig, type ConfigFlags } from "../config.ts";
import { MsglabError, usageError } from "../errors.ts";
import { interruptedError, interruptSignal } from "../interrupt.ts";
import { LAB_ROOT } from "../paths.ts";
import { parseMemory, parseSeed, parseTimeout } from "./grade-common.ts";

export interface GradeCommandOptions extends ConfigFlags {
  exercises?: string;
  out?: string;
  jobs?: string;
  shard?: string;
  force?: boolean;
  before?: string;
  json?: boolean;
  /** `--no-os-sandbox` sets this to false. */
  osSandbox?: boolean;
  seed?: string;
  timeout?: string;
  memory?: string;
}

export function defaultJobs(): number {
  // Gradings mostly wait on brokers and timers: twice the cores keeps them busy.
  return Math.max(2, Math.min(8, availableParallelism() * 2));
}

function parseShard(v: string | undefined): { index: number; count: number } | null {
  if (v === undefined) return null;
  const m = /^(\d+)\/(\d+)$/.exec(v.trim());
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!m || count < 1 || index < 1 || index > count) throw usageError(`--shard is i/n with 1 ≤ i ≤ n, e.g. --shard 2/4 (got "${v}").`);
  return { index, count };
}

/** A pair's shard, from a hash of its names: stable when students join or leave the roster. */
function shardOf(student: string, exercise: string, count: number): number {
  return createHash("sha256").update(`${student}\0${exercise}`).digest().readUInt32BE(0) % count;
}

function labVersion(): string {
  return (JSON.parse(readFileSync(join(LAB_ROOT, "package.json"), "utf8")) as { version: string }).version;
}

const engineHash = (() => {
  let memo: string | null = null;
  return () => {
    if (memo) return memo;
    const h = createHash("sha256");
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")) h.update(relative(LAB_ROOT, p)).update(readFileSync(p));
      }
    };
    for (const d of ["kit", "grading", "host", "contracts"]) walk(join(LAB_ROOT, "src", d));
    return (memo = h.digest("hex"));
  };
})();

/** What decides a grading besides the submission: the exercise's grader and the engine under it. */
function graderHash(ex: Exercise): string {
  const h = createHash("sha256").update(engineHash());
  for (const f of readdirSync(ex.exerciseDir).sort()) {
    const p = join(ex.exerciseDir, f);
    if (statSync(p).isFile()) h.update(f).update(readFileSync(p));
  }
  return h.digest("hex").slice(0, 16);
}

function fmtDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

export async function grade(roster: string, more: string[], opts: GradeCommandOptions): Promise<number> {
  if (roster === "merge") return gradeMerge(more, opts);
  if (more.length) throw usageError(`msglab grade takes one roster folder (got also ${more.join(" ")}). To join shards: \`msglab grade merge <dir>…\`.`);
  const rosterDir = resolve(roster);
  if (!existsSync(rosterDir) || !statSync(rosterDir).isDirectory()) {
    throw usageError(`There is no roster folder at ${rosterDir}. A roster holds one folder per student, each with <exercise-id>/<file>.ts (or msglab-workspace/<exercise-id>/<file>.ts).`);
  }
  const config = loadConfig(opts);
  const course = loadCourse();
  const assignment = opts.exercises ? opts.exercises.split(",").map((s) => s.trim()).filter(Boolean) : null;
  for (const id of assignment ?? []) {
    if (!course.some((e) => e.id === id)) throw usageError(`--exercises: there is no exercise "${id}". Run \`msglab list\` for the ids.`);
  }
  const jobs = opts.jobs === undefined ? defaultJobs() : Number(opts.jobs);
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 64) throw usageError(`--jobs must be a whole number from 1 to 64 (got "${opts.jobs}").`);
  const shard = parseShard(opts.shard);
  if (opts.before !== undefined && Number.isNaN(Date.parse(opts.before))) throw usageError(`--before must be a date git understands, e.g. 2026-12-01T23:59 (got "${opts.before}").`);
  const seed = parseSeed(opts.seed);
  const timeoutMs = parseTimeout(opts.timeout);
  const memoryMb = parseMemory(opts.memory);

  const { bubblewrapStatus } = await import("../grading/sandbox.ts");
  const bw = bubblewrapStatus();
  if (!bw.ok && opts.osSandbox !== false) {
    throw usageError(
      `Classroom grading runs students' code under bubblewrap, and it is not available here: ${bw.why}.\n` +
        "Install it, or pass --no-os-sandbox to grade with Node's permission model alone (weaker: no network or process isolation; the gradebook records it).",
    );
  }
  const sandbox = bw.ok && opts.osSandbox !== false ? "bwrap" : "permission";

  const out = resolve(opts.out ?? "msglab-grades");
  mkdirSync(out, { recursive: true });
  const { Gradebook } = await import("../classroom/gradebook.ts");
  const { readRoster } = await import("../classroom/roster.ts");
  const { writeReports } = await import("../classroom/reports.ts");
  const { gradeSubmission } = await import("../grading/engine.ts");
  const book = Gradebook.open(join(out, "gradebook.db"));
  const scratch = mkdtempSync(join(tmpdir(), "msglab-grade-"));
  const signal = interruptSignal();
  const progress = await import("../classroom/progress.ts");
  let labErrors = 0;
  try {
    const version = labVersion();
    book.setMeta("labVersion", version);
    course.forEach((ex) => book.upsertExercise(ex.id, ex.order, ex.title, []));
    const list = readRoster(rosterDir, course, { exercises: assignment, before: opts.before ?? null, scratch });
    for (const s of list.students) book.upsertStudent(s.student, s.commit, s.notes);
    const hashes = new Map(course.map((ex) => [ex.id, graderHash(ex)]));
    const mine = list.submissions.filter((s) => !shard || shardOf(s.student, s.exercise.id, shard.count) === shard.index - 1);

    // Unchanged since a good grading: the same file, lab and grader, and no lab error to retry.
    const todo = mine.filter((s) => {
      if (opts.force) return true;
      const prev = book.current(s.student, s.exercise.id);
      if (!prev || prev.labError || prev.labVersion !== version || prev.graderHash !== hashes.get(s.exercise.id)) return true;
      if (s.problem) return !(prev.status === (s.problem.kind === "missing" ? "missing" : "error") && prev.message === s.problem.message);
      return prev.submissionSha256 !== s.sha256 || prev.commit !== s.commit;
    });
    const bar = progress.start(todo.length, mine.length - todo.length, opts.json === true);
    const now = () => new Date().toISOString();

    // Nothing to grade: recorded at once.
    for (const s of todo.filter((x) => x.problem)) {
      book.record({
        student: s.student,
        exercise: s.exercise.id,
        status: s.problem!.kind === "missing" ? "missing" : "error",
        score: 0,
        maxScore: book.current(s.student, s.exercise.id)?.maxScore ?? 0,
        seed: null,
        submissionSha256: null,
        commit: s.commit,
        labVersion: version,
        graderHash: hashes.get(s.exercise.id)!,
        sandbox: null,
        labError: false,
        durationMs: 0,
        gradedAt: now(),
        result: null,
        message: s.problem!.message,
      });
      bar.done(s.student, s.exercise.id, s.problem!.kind === "missing" ? "missing" : "error", s.problem!.message);
    }

    const queue = todo.filter((x) => !x.problem);
    const worker = async () => {
      for (;;) {
        const s = queue.shift();
        if (!s || signal.aborted) return;
        bar.begin(s.student, s.exercise.id);
        const r = await gradeSubmission(s.exercise, s.file!, { config, seed, timeoutMs, memoryMb, sandbox, signal });
        if (r.interrupted) return;
        if (r.labError) labErrors++;
        book.upsertExercise(s.exercise.id, s.exercise.order, s.exercise.title, r.tests.map((t) => t.name));
        book.record({
          student: s.student,
          exercise: s.exercise.id,
          status: r.status,
          score: r.score,
          maxScore: r.maxScore,
          seed: r.seed,
          submissionSha256: s.sha256,
          commit: s.commit,
          labVersion: version,
          graderHash: hashes.get(s.exercise.id)!,
          sandbox: r.sandbox,
          labError: r.labError,
          durationMs: r.durationMs,
          gradedAt: now(),
          result: { ...r, submission: `${s.student}/${s.exercise.id}/${s.exercise.entry}` },
          message: r.status === "error" ? r.message : null,
        });
        bar.done(s.student, s.exercise.id, r.status, r.summary, r.labError);
      }
    };
    await Promise.all(Array.from({ length: Math.min(jobs, Math.max(1, queue.length)) }, worker));
    writeReports(book, out);
    const summary = bar.finish(out);
    if (opts.json) process.stdout.write(JSON.stringify({ version: 1, out, ...summary, labErrors, sandbox }, null, 2) + "\n");
    if (signal.aborted) throw interruptedError();
  } finally {
    book.close();
    rmSync(scratch, { recursive: true, force: true });
  }
  if (labErrors) {
    process.stderr.write(`${labErrors} grading(s) errored because of the lab or the brokers (not the students): run \`msglab doctor\`, then the same command again to regrade just those.\n`);
    return 1;
  }
  return 0;
}

/** Joins the outputs of `--shard` runs into one gradebook and one set of reports. */
export async function gradeMerge(dirs: string[], opts: { out?: string; json?: boolean }): Promise<number> {
  if (dirs.length === 0) throw usageError("msglab grade merge <dir>…: name the output folders of the shards to join.");
  const out = resolve(opts.out ?? "msglab-grades");
  const { Gradebook } = await import("../classroom/gradebook.ts");
  const { writeReports } = await import("../classroom/reports.ts");
  mkdirSync(out, { recursive: true });
  const into = Gradebook.open(join(out, "gradebook.db"));
  try {
    for (const d of dirs) {
      const f = join(resolve(d), "gradebook.db");
      if (resolve(d) === out) continue;
      if (!existsSync(f)) throw new MsglabError(`${d} holds no gradebook.db: is it the --out folder of a \`msglab grade\` run?`, 2);
      const other = Gradebook.open(f);
      try {
        into.mergeFrom(other);
      } finally {
        other.close();
      }
    }
    writeReports(into, out);
    const n = into.all().length;
    if (opts.json) process.stdout.write(JSON.stringify({ version: 1, out, gradings: n }) + "\n");
    else process.stdout.write(`merged ${dirs.length} gradebook(s): ${n} gradings → ${out}\n`);
  } finally {
    into.close();
  }
  return 0;
}
