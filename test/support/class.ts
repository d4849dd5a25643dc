/**
 * A synthetic class for `msglab grade`: students made of references, scaffolds, mutants, valid
 * alternatives, hostile files, missing exercises and broken folders, each with the outcome it
 * must get. Used by test/grade.test.ts and by `npm run bench`.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, symlinkSync, writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { findExercise } from "../../src/catalog/load.ts";
import type { Exercise } from "../../src/catalog/types.ts";
import { LAB_ROOT } from "../../src/paths.ts";
import { mutantsOf, validOf } from "./mutants.ts";

export type Expected = "pass" | "fail" | "error" | "missing" | "fail|error";

export interface ClassSpec {
  /** student → exercise → expected status */
  expected: Map<string, Map<string, Expected>>;
  exercises: string[];
}

function put(roster: string, student: string, ex: Exercise, source: string, name = ex.entry, ws = false): void {
  const dir = join(roster, student, ...(ws ? ["msglab-workspace"] : []), ex.id);
  mkdirSync(dir, { recursive: true });
  copyFileSync(source, join(dir, name));
}

function git(cwd: string, date: string, ...args: string[]): void {
  const who = { GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@example.org", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@example.org" };
  const r = spawnSync("git", ["-C", cwd, ...args], { encoding: "utf8", env: { ...process.env, ...who, GIT_AUTHOR_DATE: date, GIT_COMMITTER_DATE: date } });
  if (r.status !== 0) throw new Error(`git ${args.join(" ")}: ${r.stderr}`);
}

/**
 * Builds the class in `roster` for the given exercises. `deadline` is the --before date the git
 * student's expectations assume (its only commit before it holds the scaffold).
 */
export function buildClass(roster: string, ids: string[], deadline: string): ClassSpec {
  const exs = ids.map((id) => findExercise(id));
  const expected = new Map<string, Map<string, Expected>>();
  const expect = (student: string, id: string, e: Expected) => {
    if (!expected.has(student)) expected.set(student, new Map());
    expected.get(student)!.set(id, e);
  };
  for (const ex of exs) {
    put(roster, "ada", ex, ex.solutionPath);
    expect("ada", ex.id, "pass");
    put(roster, "ben", ex, ex.scaffoldPath, ex.entry, true); // in msglab-workspace/, as a repo clone has it
    expect("ben", ex.id, "fail");
    const mutant = mutantsOf(ex.id)[0]!;
    put(roster, "cy", ex, mutant.file);
    expect("cy", ex.id, "fail");
    const valid = validOf(ex.id)[0]!;
    put(roster, "dee", ex, valid.file);
    expect("dee", ex.id, "pass");
  }
  // eve: hostile on the first exercise, nothing for the others.
  put(roster, "eve", exs[0]!, join(LAB_ROOT, "test", "hostile", "retry-backoff", "forge-fd3.ts"));
  expect("eve", exs[0]!.id, "fail|error");
  for (const ex of exs.slice(1)) expect("eve", ex.id, "missing");
  // fay: a wrong file name, two candidates, a link out of the roster, and an unknown folder.
  put(roster, "fay", exs[0]!, exs[0]!.solutionPath, "solution.ts");
  expect("fay", exs[0]!.id, "error");
  if (exs[1]) {
    put(roster, "fay", exs[1], exs[1].solutionPath, "a.ts");
    put(roster, "fay", exs[1], exs[1].solutionPath, "b.ts");
    expect("fay", exs[1].id, "error");
  }
  if (exs[2]) {
    mkdirSync(join(roster, "fay", exs[2].id), { recursive: true });
    symlinkSync(exs[2].solutionPath, join(roster, "fay", exs[2].id, exs[2].entry));
    expect("fay", exs[2].id, "error");
  }
  mkdirSync(join(roster, "fay", "not-an-exercise"), { recursive: true });
  writeFileSync(join(roster, "fay", "not-an-exercise", "x.ts"), "export {}\n");
  // gus: a git repository; the scaffold before the deadline, the reference after it.
  const gus = join(roster, "gus");
  mkdirSync(gus, { recursive: true });
  const early = new Date(Date.parse(deadline) - 30 * 86400_000).toISOString();
  const late = new Date(Date.parse(deadline) + 30 * 86400_000).toISOString();
  git(gus, early, "init", "-q");
  for (const ex of exs) put(roster, "gus", ex, ex.scaffoldPath, ex.entry, true);
  git(gus, early, "add", "-A");
  git(gus, early, "commit", "-q", "-m", "start");
  for (const ex of exs) writeFileSync(join(gus, "msglab-workspace", ex.id, ex.entry), readFileSync(ex.solutionPath));
  git(gus, late, "add", "-A");
  git(gus, late, "commit", "-q", "-m", "after the deadline");
  for (const ex of exs) expect("gus", ex.id, "fail");
  return { expected, exercises: ids };
}

/** A plain class of `n` students, each submitting `ids` (references and scaffolds, alternately): for the bench. */
export function plainClass(roster: string, ids: string[], n: number): void {
  const exs = ids.map((id) => findExercise(id));
  for (let i = 0; i < n; i++) {
    const student = `student-${String(i + 1).padStart(2, "0")}`;
    for (const ex of exs) put(roster, student, ex, i % 2 === 0 ? ex.solutionPath : ex.scaffoldPath);
  }
}
