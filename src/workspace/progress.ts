import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type Database from "better-sqlite3";
import type { RunResult } from "../grading/result.ts";
import type { ExerciseStatus } from "./status.ts";

export interface ProgressRow {
  exercise: string;
  status: ExerciseStatus;
  attempts: number;
  hintsSeen: number;
  lastResult: RunResult | null;
  updatedAt: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS progress (
  exercise    TEXT PRIMARY KEY,
  status      TEXT NOT NULL CHECK (status IN ('started', 'failing', 'passed')),
  attempts    INTEGER NOT NULL DEFAULT 0,
  hints_seen  INTEGER NOT NULL DEFAULT 0,
  last_result TEXT,
  updated_at  TEXT NOT NULL
);`;

/**
 * The learner's progress, in SQLite inside the workspace. Every change is one transaction, so
 * a run killed at any point leaves the previous state or the new one, never a torn mix. After
 * each write a status snapshot is renamed into place for `msglab list`, which must not load
 * native modules to print a table.
 */
export class ProgressStore {
  private constructor(
    private readonly db: Database.Database,
    private readonly dir: string,
  ) {}

  static async open(workspace: string): Promise<ProgressStore> {
    const dir = join(workspace, ".msglab");
    mkdirSync(dir, { recursive: true });
    const { default: Sqlite } = await import("better-sqlite3");
    const db = new Sqlite(join(dir, "progress.db"));
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma("busy_timeout = 5000");
    db.exec(SCHEMA);
    return new ProgressStore(db, dir);
  }

  get(exercise: string): ProgressRow | null {
    const row = this.db.prepare("SELECT * FROM progress WHERE exercise = ?").get(exercise) as Record<string, unknown> | undefined;
    return row ? toRow(row) : null;
  }

  all(): ProgressRow[] {
    return (this.db.prepare("SELECT * FROM progress ORDER BY exercise").all() as Record<string, unknown>[]).map(toRow);
  }

  markStarted(exercise: string): void {
    this.db
      .prepare("INSERT INTO progress (exercise, status, updated_at) VALUES (?, 'started', ?) ON CONFLICT(exercise) DO NOTHING")
      .run(exercise, now());
    this.snapshot();
  }

  /**
   * A run that the lab or a broker spoiled (`labError`) never downgrades a status, and neither
   * does one where nothing ran; either still counts as an attempt.
   */
  recordResult(result: RunResult): void {
    const write = this.db.transaction(() => {
      const prev = this.get(result.exercise);
      const status: ExerciseStatus =
        result.status === "pass" ? "passed" : result.status === "fail" && !result.labError ? "failing" : (prev?.status ?? "started");
      this.db
        .prepare(
          `INSERT INTO progress (exercise, status, attempts, last_result, updated_at) VALUES (@exercise, @status, 1, @result, @at)
           ON CONFLICT(exercise) DO UPDATE SET status = @status, attempts = attempts + 1, last_result = @result, updated_at = @at`,
        )
        .run({ exercise: result.exercise, status, result: JSON.stringify(result), at: now() });
    });
    write.immediate();
    this.snapshot();
  }

  /** Returns how many hints the learner has now seen. */
  nextHint(exercise: string, available: number): number {
    const bump = this.db.transaction(() => {
      this.db
        .prepare(
          `INSERT INTO progress (exercise, status, hints_seen, updated_at) VALUES (?, 'started', 1, ?)
           ON CONFLICT(exercise) DO UPDATE SET hints_seen = MIN(hints_seen + 1, ?), updated_at = excluded.updated_at`,
        )
        .run(exercise, now(), available);
      return this.get(exercise)!.hintsSeen;
    });
    const seen = bump.immediate();
    this.snapshot();
    return seen;
  }

  close(): void {
    this.db.close();
  }

  private snapshot(): void {
    const statuses = Object.fromEntries(this.all().map((r) => [r.exercise, { status: r.status, attempts: r.attempts, hintsSeen: r.hintsSeen }]));
    const file = join(this.dir, "status.json");
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify({ version: 1, statuses }, null, 2));
    renameSync(tmp, file);
  }
}

function toRow(r: Record<string, unknown>): ProgressRow {
  return {
    exercise: String(r.exercise),
    status: r.status as ExerciseStatus,
    attempts: Number(r.attempts),
    hintsSeen: Number(r.hints_seen),
    lastResult: r.last_result ? (JSON.parse(String(r.last_result)) as RunResult) : null,
    updatedAt: String(r.updated_at),
  };
}

function now(): string {
  return new Date().toISOString();
}
