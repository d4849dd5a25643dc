/**
 * The gradebook: SQLite, the source of truth of a class's grading. Every result is committed in
 * one transaction as it lands (WAL, synchronous=FULL), so a `kill -9` loses nothing recorded and
 * never leaves the file corrupt. A student × exercise has at most one current grading; regrading
 * keeps the old one as history.
 */
import Database from "better-sqlite3";
import type { RunResult } from "../grading/result.ts";

export type GradeStatus = "pass" | "fail" | "error" | "missing";

export interface GradingRow {
  student: string;
  exercise: string;
  status: GradeStatus;
  score: number;
  maxScore: number;
  seed: number | null;
  submissionSha256: string | null;
  commit: string | null;
  labVersion: string;
  graderHash: string;
  sandbox: string | null;
  labError: boolean;
  durationMs: number;
  gradedAt: string;
  /** The grading's full result (exercism results.json v2 shape), or null for `missing`. */
  result: RunResult | null;
  /** For `missing` and invalid folders: what was wrong. */
  message: string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS students (
  name TEXT PRIMARY KEY,
  commit_sha TEXT,
  notes TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS exercises (id TEXT PRIMARY KEY, position INTEGER NOT NULL, title TEXT NOT NULL, checks TEXT NOT NULL DEFAULT '[]');
CREATE TABLE IF NOT EXISTS gradings (
  id INTEGER PRIMARY KEY,
  student TEXT NOT NULL,
  exercise TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'error', 'missing')),
  score INTEGER NOT NULL,
  max_score INTEGER NOT NULL,
  seed INTEGER,
  submission_sha256 TEXT,
  commit_sha TEXT,
  lab_version TEXT NOT NULL,
  grader_hash TEXT NOT NULL,
  sandbox TEXT,
  lab_error INTEGER NOT NULL DEFAULT 0,
  duration_ms INTEGER NOT NULL,
  graded_at TEXT NOT NULL,
  message TEXT,
  result_json TEXT,
  current INTEGER NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX IF NOT EXISTS gradings_current ON gradings (student, exercise) WHERE current = 1;
CREATE TABLE IF NOT EXISTS checks (
  grading_id INTEGER NOT NULL REFERENCES gradings (id),
  idx INTEGER NOT NULL,
  name TEXT NOT NULL,
  status TEXT NOT NULL,
  message TEXT,
  duration_ms INTEGER NOT NULL,
  PRIMARY KEY (grading_id, idx)
);
`;

interface Raw {
  student: string;
  exercise: string;
  status: GradeStatus;
  score: number;
  max_score: number;
  seed: number | null;
  submission_sha256: string | null;
  commit_sha: string | null;
  lab_version: string;
  grader_hash: string;
  sandbox: string | null;
  lab_error: number;
  duration_ms: number;
  graded_at: string;
  message: string | null;
  result_json: string | null;
}

function fromRaw(r: Raw): GradingRow {
  return {
    student: r.student,
    exercise: r.exercise,
    status: r.status,
    score: r.score,
    maxScore: r.max_score,
    seed: r.seed,
    submissionSha256: r.submission_sha256,
    commit: r.commit_sha,
    labVersion: r.lab_version,
    graderHash: r.grader_hash,
    sandbox: r.sandbox,
    labError: r.lab_error === 1,
    durationMs: r.duration_ms,
    gradedAt: r.graded_at,
    message: r.message,
    result: r.result_json ? (JSON.parse(r.result_json) as RunResult) : null,
  };
}

export class Gradebook {
  private constructor(readonly db: Database.Database) {}

  static open(file: string): Gradebook {
    const db = new Database(file);
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma("busy_timeout = 10000");
    db.exec(SCHEMA);
    return new Gradebook(db);
  }

  close(): void {
    this.db.close();
  }

  setMeta(key: string, value: string): void {
    this.db.prepare("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(key, value);
  }

  meta(key: string): string | null {
    return (this.db.prepare("SELECT value FROM meta WHERE key = ?").get(key) as { value: string } | undefined)?.value ?? null;
  }

  upsertStudent(name: string, commit: string | null, notes: string[]): void {
    this.db
      .prepare("INSERT INTO students (name, commit_sha, notes) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET commit_sha = excluded.commit_sha, notes = excluded.notes")
      .run(name, commit, JSON.stringify(notes));
  }

  upsertExercise(id: string, position: number, title: string, checks: string[]): void {
    this.db
      .prepare("INSERT INTO exercises (id, position, title, checks) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET position = excluded.position, title = excluded.title, checks = CASE WHEN excluded.checks = '[]' THEN exercises.checks ELSE excluded.checks END")
      .run(id, position, title, JSON.stringify(checks));
  }

  current(student: string, exercise: string): GradingRow | null {
    const r = this.db.prepare("SELECT * FROM gradings WHERE student = ? AND exercise = ? AND current = 1").get(student, exercise) as Raw | undefined;
    return r ? fromRaw(r) : null;
  }

  /** All current gradings, by student then course order. */
  all(): GradingRow[] {
    const rows = this.db
      .prepare("SELECT g.* FROM gradings g LEFT JOIN exercises e ON e.id = g.exercise WHERE g.current = 1 ORDER BY g.student, e.position, g.exercise")
      .all() as Raw[];
    return rows.map(fromRaw);
  }

  students(): { name: string; commit: string | null; notes: string[] }[] {
    return (this.db.prepare("SELECT name, commit_sha, notes FROM students ORDER BY name").all() as { name: string; commit_sha: string | null; notes: string }[]).map((s) => ({
      name: s.name,
      commit: s.commit_sha,
      notes: JSON.parse(s.notes) as string[],
    }));
  }

  exercises(): { id: string; title: string; checks: string[] }[] {
    return (this.db.prepare("SELECT id, title, checks FROM exercises ORDER BY position").all() as { id: string; title: string; checks: string }[]).map((e) => ({
      id: e.id,
      title: e.title,
      checks: JSON.parse(e.checks) as string[],
    }));
  }

  /** Records one grading as current, in one transaction with its checks. */
  record(row: GradingRow): void {
    const tx = this.db.transaction(() => {
      this.db.prepare("UPDATE gradings SET current = 0 WHERE student = ? AND exercise = ? AND current = 1").run(row.student, row.exercise);
      const info = this.db
        .prepare(
          `INSERT INTO gradings (student, exercise, status, score, max_score, seed, submission_sha256, commit_sha, lab_version, grader_hash, sandbox, lab_error, duration_ms, graded_at, message, result_json)
           VALUES (@student, @exercise, @status, @score, @maxScore, @seed, @sha, @commit, @labVersion, @graderHash, @sandbox, @labError, @durationMs, @gradedAt, @message, @result)`,
        )
        .run({
          student: row.student,
          exercise: row.exercise,
          status: row.status,
          score: row.score,
          maxScore: row.maxScore,
          seed: row.seed,
          sha: row.submissionSha256,
          commit: row.commit,
          labVersion: row.labVersion,
          graderHash: row.graderHash,
          sandbox: row.sandbox,
          labError: row.labError ? 1 : 0,
          durationMs: row.durationMs,
          gradedAt: row.gradedAt,
          message: row.message,
          result: row.result ? JSON.stringify(row.result) : null,
        });
      const id = Number(info.lastInsertRowid);
      const insert = this.db.prepare("INSERT INTO checks (grading_id, idx, name, status, message, duration_ms) VALUES (?, ?, ?, ?, ?, ?)");
      (row.result?.tests ?? []).forEach((c, i) => insert.run(id, i, c.name, c.status, c.message, c.durationMs));
    });
    tx.immediate();
  }

  /** Adds another gradebook's current gradings (merge of shards); the later grading of a pair wins. */
  mergeFrom(other: Gradebook): void {
    for (const s of other.students()) this.upsertStudent(s.name, s.commit, s.notes);
    const ex = other.db.prepare("SELECT id, position, title, checks FROM exercises").all() as { id: string; position: number; title: string; checks: string }[];
    for (const e of ex) this.upsertExercise(e.id, e.position, e.title, JSON.parse(e.checks) as string[]);
    for (const [k, v] of Object.entries(Object.fromEntries((other.db.prepare("SELECT key, value FROM meta").all() as { key: string; value: string }[]).map((m) => [m.key, m.value])))) {
      if (this.meta(k) === null) this.setMeta(k, v);
    }
    for (const row of other.all()) {
      const mine = this.current(row.student, row.exercise);
      if (!mine || mine.gradedAt < row.gradedAt) this.record(row);
    }
  }
}
