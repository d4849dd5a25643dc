/**
 * The gradebook's reports, each for a reader of its own: results.json for tools, grades.csv for a
 * spreadsheet or an LMS, junit.xml for CI, report.html for the instructor. All are derived from
 * the gradebook, so a merge or a resumed run writes them whole again.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Gradebook, GradingRow } from "./gradebook.ts";
import { renderReport } from "./report-html.ts";

export interface ResultsEntry {
  student: string;
  exercise: string;
  status: GradingRow["status"];
  score: number;
  maxScore: number;
  seed: number | null;
  submissionSha256: string | null;
  commit: string | null;
  /** The grading (exercism results.json v2 with msglab's fields), or null when nothing was graded. */
  result: GradingRow["result"];
  message: string | null;
}

export function resultsJson(rows: GradingRow[]): ResultsEntry[] {
  return rows.map((r) => ({
    student: r.student,
    exercise: r.exercise,
    status: r.status,
    score: r.score,
    maxScore: r.maxScore,
    seed: r.seed,
    submissionSha256: r.submissionSha256,
    commit: r.commit,
    result: r.result,
    message: r.message,
  }));
}

/** A CSV field; a leading =, +, - or @ is defused so a spreadsheet never runs a student's name. */
function csv(v: string | number): string {
  let s = String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function gradesCsv(students: string[], exercises: string[], rows: GradingRow[]): string {
  const byKey = new Map(rows.map((r) => [`${r.student}\0${r.exercise}`, r]));
  const lines = [["student", ...exercises, "total"].map(csv).join(",")];
  for (const s of students) {
    let total = 0;
    const cells = exercises.map((e) => {
      const r = byKey.get(`${s}\0${e}`);
      total += r?.score ?? 0;
      return r ? String(r.score) : "";
    });
    lines.push([s, ...cells, String(total)].map(csv).join(","));
  }
  return lines.join("\n") + "\n";
}

const xml = (s: string): string =>
  s
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F]/g, "")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");

/** A testsuite per student, a testcase per check (classname: the exercise); missing exercises are one failed testcase. */
export function classJUnit(students: string[], rows: GradingRow[]): string {
  const out = [`<?xml version="1.0" encoding="UTF-8"?>`];
  const suites: string[] = [];
  let total = 0;
  let failures = 0;
  let errors = 0;
  for (const s of students) {
    const mine = rows.filter((r) => r.student === s);
    const cases: string[] = [];
    let f = 0;
    let e = 0;
    for (const r of mine) {
      const tests = r.result?.tests ?? [];
      if (tests.length === 0) {
        const tag = r.status === "missing" ? "failure" : "error";
        if (tag === "failure") f++;
        else e++;
        cases.push(`    <testcase classname="${xml(r.exercise)}" name="${xml(r.status === "missing" ? "submitted" : "graded")}" time="0"><${tag} message="${xml(r.message ?? r.status)}"/></testcase>`);
        continue;
      }
      for (const t of tests) {
        const open = `    <testcase classname="${xml(r.exercise)}" name="${xml(t.name)}" time="${(t.durationMs / 1000).toFixed(3)}"`;
        if (t.status === "pass") cases.push(`${open}/>`);
        else {
          const tag = t.status === "fail" ? "failure" : "error";
          if (tag === "failure") f++;
          else e++;
          cases.push(`${open}><${tag} message="${xml(t.message ?? t.status)}">${xml([t.message ?? "", t.hint ? `Hint: ${t.hint}` : ""].filter(Boolean).join("\n"))}</${tag}></testcase>`);
        }
      }
    }
    total += cases.length;
    failures += f;
    errors += e;
    suites.push(`  <testsuite name="${xml(s)}" tests="${cases.length}" failures="${f}" errors="${e}">`, ...cases, `  </testsuite>`);
  }
  out.push(`<testsuites name="msglab grade" tests="${total}" failures="${failures}" errors="${errors}">`, ...suites, `</testsuites>`, "");
  return out.join("\n");
}

/** Writes the four reports from the gradebook into `dir`. */
export function writeReports(book: Gradebook, dir: string): void {
  const rows = book.all();
  const students = [...new Set([...book.students().map((s) => s.name), ...rows.map((r) => r.student)])].sort((a, b) => a.localeCompare(b));
  const exercises = book.exercises();
  const ids = exercises.map((e) => e.id).filter((id) => rows.some((r) => r.exercise === id));
  writeFileSync(join(dir, "results.json"), JSON.stringify(resultsJson(rows), null, 2) + "\n");
  writeFileSync(join(dir, "grades.csv"), gradesCsv(students, ids, rows));
  writeFileSync(join(dir, "junit.xml"), classJUnit(students, rows));
  writeFileSync(
    join(dir, "report.html"),
    renderReport({
      generatedAt: new Date().toISOString(),
      labVersion: book.meta("labVersion") ?? "",
      students: book.students().filter((s) => students.includes(s.name)),
      exercises: exercises.filter((e) => ids.includes(e.id)),
      rows,
    }),
  );
}
