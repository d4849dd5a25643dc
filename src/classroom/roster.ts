/**
 * A roster is a folder with one folder per student, named after the student. Each holds the
 * student's exercises in the workspace layout, `<exercise-id>/<file>.ts`, either directly or in a
 * `msglab-workspace/` inside (a clone of the student's repository, as `gh classroom clone
 * student-repos` makes it). A student folder that is a git repository is read at its HEAD, or at
 * its last commit before `--before`, through git itself: no checkout is ever changed.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync, writeFileSync } from "node:fs";
import { dirname, isAbsolute, join, relative } from "node:path";
import type { Exercise } from "../catalog/types.ts";

/** What one student × exercise comes to before any grading. */
export interface Submission {
  student: string;
  exercise: Exercise;
  /** The file to grade, or null when there is nothing to grade. */
  file: string | null;
  /** Why there is nothing to grade: `missing` (score 0) or a problem with the folder (an error). */
  problem: { kind: "missing" | "invalid"; message: string } | null;
  /** sha256 of the file (and the other files of its folder), for "graded already?" and the gradebook. */
  sha256: string | null;
  /** The commit graded, when the student folder is a git repository. */
  commit: string | null;
}

export interface StudentNotes {
  student: string;
  commit: string | null;
  notes: string[];
}

export interface Roster {
  students: StudentNotes[];
  submissions: Submission[];
}

const IGNORED = new Set([".git", ".msglab", "node_modules", ".github"]);

function inside(parent: string, child: string): boolean {
  const rel = relative(parent, child);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

function git(cwd: string, args: string[]): string | null {
  const r = spawnSync("git", ["-C", cwd, ...args], { encoding: "utf8", timeout: 30_000 });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** The workspace inside a student folder: `msglab-workspace/` when there is one, else the folder. */
function workspaceOf(studentDir: string): string {
  const ws = join(studentDir, "msglab-workspace");
  return existsSync(ws) && statSync(ws).isDirectory() ? ws : studentDir;
}

function hashFiles(files: string[]): string {
  const h = createHash("sha256");
  for (const f of [...files].sort()) h.update(f.split("/").pop()! + "\0").update(readFileSync(f)).update("\0");
  return h.digest("hex");
}

/**
 * Reads the roster. `exercises` is the assignment (null: whatever each student has a folder
 * for). `before` is an ISO date; `scratch` receives files read from git at a past commit.
 */
export function readRoster(rosterDir: string, course: Exercise[], opts: { exercises: string[] | null; before: string | null; scratch: string }): Roster {
  const root = realpathSync(rosterDir);
  const byId = new Map(course.map((e) => [e.id, e]));
  const students: StudentNotes[] = [];
  const submissions: Submission[] = [];
  const names = readdirSync(root, { withFileTypes: true })
    .filter((d) => !d.name.startsWith(".") && (d.isDirectory() || d.isSymbolicLink()))
    .map((d) => d.name)
    .sort((a, b) => a.localeCompare(b));

  for (const student of names) {
    const dir = join(root, student);
    const notes: string[] = [];
    let real: string;
    try {
      real = realpathSync(dir);
    } catch {
      continue;
    }
    if (!inside(root, real) || !statSync(real).isDirectory()) {
      students.push({ student, commit: null, notes: [`${student}/ is a link to ${real}, outside the roster: not graded.`] });
      for (const id of opts.exercises ?? []) {
        const ex = byId.get(id);
        if (ex) submissions.push({ student, exercise: ex, file: null, problem: { kind: "invalid", message: `The student folder is a link outside the roster (${real}).` }, sha256: null, commit: null });
      }
      continue;
    }
    const isRepo = existsSync(join(dir, ".git"));
    let commit = isRepo ? git(dir, ["rev-parse", "HEAD"]) : null;
    let atCommit: string | null = null;
    if (opts.before) {
      if (isRepo) {
        atCommit = git(dir, ["rev-list", "-1", `--before=${opts.before}`, "HEAD"]) || null;
        commit = atCommit;
        if (!atCommit) notes.push(`No commit before ${opts.before}: every exercise counts as missing.`);
      } else notes.push(`Not a git repository: --before cannot apply, the files as they are were graded.`);
    }

    // The exercise folders this student has: from the commit, or from the working tree.
    const wsRel = relative(dir, workspaceOf(dir));
    const present = new Map<string, { files: string[]; problem: string | null }>();
    if (opts.before && isRepo) {
      if (atCommit) {
        const listed = git(dir, ["ls-tree", "-r", "--name-only", atCommit, "--", wsRel || "."]) ?? "";
        for (const path of listed.split("\n").filter(Boolean)) {
          const inWs = wsRel ? relative(wsRel, path) : path;
          const parts = inWs.split("/");
          if (parts.length !== 2 || IGNORED.has(parts[0]!)) continue;
          const [exId, name] = parts as [string, string];
          if (!name.endsWith(".ts")) continue;
          const out = join(opts.scratch, "git", student, exId, name);
          mkdirSync(dirname(out), { recursive: true });
          const blob = spawnSync("git", ["-C", dir, "show", `${atCommit}:${path}`], { timeout: 30_000 });
          if (blob.status !== 0) continue;
          writeFileSync(out, blob.stdout);
          const entry = present.get(exId) ?? { files: [], problem: null };
          entry.files.push(out);
          present.set(exId, entry);
        }
      }
    } else {
      const ws = workspaceOf(dir);
      for (const d of readdirSync(ws, { withFileTypes: true })) {
        if (d.name.startsWith(".") || IGNORED.has(d.name) || !(d.isDirectory() || d.isSymbolicLink())) continue;
        const exDir = join(ws, d.name);
        let realEx: string;
        try {
          realEx = realpathSync(exDir);
        } catch {
          continue;
        }
        if (!statSync(realEx).isDirectory()) continue;
        if (!inside(root, realEx)) {
          present.set(d.name, { files: [], problem: `${d.name}/ is a link to ${realEx}, outside the roster` });
          continue;
        }
        const files: string[] = [];
        let problem: string | null = null;
        for (const f of readdirSync(exDir)) {
          if (!f.endsWith(".ts")) continue;
          const p = join(exDir, f);
          let realF: string;
          try {
            realF = realpathSync(p);
          } catch {
            problem = `${d.name}/${f} is a broken link`;
            continue;
          }
          if (lstatSync(p).isSymbolicLink() && !inside(root, realF)) {
            problem = `${d.name}/${f} is a link to ${realF}, outside the roster`;
            continue;
          }
          files.push(p);
        }
        present.set(d.name, { files, problem });
      }
    }

    for (const exId of present.keys()) {
      if (!byId.has(exId) && !IGNORED.has(exId)) notes.push(`${exId}/ is not an exercise of this course (not graded). Exercise folders are named by id: \`msglab list\`.`);
    }
    const wanted = opts.exercises ?? [...present.keys()].filter((id) => byId.has(id));
    for (const id of wanted) {
      const ex = byId.get(id)!;
      const got = present.get(id);
      const base = { student, exercise: ex, commit };
      if (!got || (got.files.length === 0 && !got.problem)) {
        submissions.push({ ...base, file: null, problem: { kind: "missing", message: `No ${id}/${ex.entry} in the submission.` }, sha256: null });
        continue;
      }
      if (got.problem) {
        submissions.push({ ...base, file: null, problem: { kind: "invalid", message: `${got.problem}: not graded. Submit a real file inside your own folder.` }, sha256: null });
        continue;
      }
      const entry = got.files.find((f) => f.endsWith(`/${ex.entry}`));
      if (!entry) {
        const found = got.files.map((f) => f.split("/").pop()).join(", ");
        const message =
          got.files.length === 1
            ? `${id}/ holds ${found}, but the exercise's file is ${ex.entry}: rename it.`
            : `${id}/ holds ${got.files.length} candidate files (${found}) and none is ${ex.entry}: keep yours as ${ex.entry}.`;
        submissions.push({ ...base, file: null, problem: { kind: "invalid", message }, sha256: null });
        continue;
      }
      submissions.push({ ...base, file: entry, problem: null, sha256: hashFiles(got.files) });
    }
    students.push({ student, commit, notes });
  }
  return { students, submissions };
}
