/**
 * Progress of a class grading: on a terminal, one bar with counts and an ETA, redrawn in place;
 * without one (CI logs), a plain line per grading. Written to stderr, so `--json` stdout stays clean.
 */
import type { GradeStatus } from "./gradebook.ts";

export interface Summary {
  graded: number;
  skipped: number;
  counts: Record<GradeStatus, number>;
  wallMs: number;
}

export function start(total: number, skipped: number, quiet: boolean) {
  const tty = process.stderr.isTTY === true && !quiet;
  const counts: Record<GradeStatus, number> = { pass: 0, fail: 0, error: 0, missing: 0 };
  const started = performance.now();
  const running = new Set<string>();
  let done = 0;
  const write = (s: string) => process.stderr.write(s);
  const eta = () => {
    if (done === 0) return "…";
    const left = ((performance.now() - started) / done) * (total - done);
    const s = Math.round(left / 1000);
    return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
  };
  const draw = () => {
    if (!tty) return;
    const width = 28;
    const filled = total ? Math.round((done / total) * width) : width;
    const bar = "█".repeat(filled) + "░".repeat(width - filled);
    write(`\r\x1b[2K${bar} ${done}/${total} · pass ${counts.pass} fail ${counts.fail} error ${counts.error} missing ${counts.missing} · ${running.size} running · ETA ${eta()}`);
  };
  if (!quiet) write(`grading ${total} submission(s)${skipped ? `, ${skipped} unchanged since they were graded (--force regrades)` : ""}\n`);
  draw();
  return {
    begin(student: string, exercise: string): void {
      running.add(`${student}/${exercise}`);
      draw();
    },
    done(student: string, exercise: string, status: GradeStatus, summary: string | null, labError = false): void {
      running.delete(`${student}/${exercise}`);
      done++;
      counts[status]++;
      if (!quiet && !tty) write(`${String(done).padStart(String(total).length)}/${total} ${student} × ${exercise}: ${status}${labError ? " (lab error)" : ""}${summary ? ` · ${summary.split("\n")[0]}` : ""}\n`);
      draw();
    },
    finish(out: string): Summary {
      const wallMs = Math.round(performance.now() - started);
      if (tty) write("\n");
      if (!quiet) write(`graded ${done} in ${(wallMs / 1000).toFixed(1)} s (pass ${counts.pass}, fail ${counts.fail}, error ${counts.error}, missing ${counts.missing}); reports in ${out}\n`);
      return { graded: done, skipped, counts, wallMs };
    },
  };
}
