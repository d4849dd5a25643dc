/**
 * `npm run bench`: median wall times of the real CLI, as a learner feels them, next to their
 * targets. It asserts nothing. BENCH_RUNS sets how many runs each median takes (default 5).
 * BENCH_CLASS=1 adds the classroom benchmark when `msglab grade` exists. The test suite's time
 * per exercise comes from the last `npm test` (test/support/timing-reporter.ts writes it).
 */
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadCourse } from "../src/catalog/load.ts";
import type { Exercise } from "../src/catalog/types.ts";
import { LAB_ROOT } from "../src/paths.ts";

const runs = Number(process.env.BENCH_RUNS ?? 5);
const bin = join(LAB_ROOT, "bin", "msglab.js");
const env = { ...process.env, MSGLAB_WORKSPACE: join(LAB_ROOT, ".bench", "ws"), FORCE_COLOR: "0" };

/** Exercises whose grader SIGKILLs the learner's process at a chosen point and starts another on what it left. */
const CRASH_HARNESS = new Set(["at-least-once-consumer", "account-funding-saga", "outbox-write", "retry-dlq-consumer", "poison-quorum", "outbox-relay"]);

function targetFor(ex: Exercise): { label: string; seconds: number } {
  if (ex.brokers.includes("kafka")) return { label: "Kafka", seconds: 3 };
  if (CRASH_HARNESS.has(ex.id)) return { label: "crash harness", seconds: 2.5 };
  if (ex.brokers.includes("rabbitmq")) return { label: "RabbitMQ", seconds: 1.5 };
  if (ex.brokers.includes("zeromq")) return { label: "ZeroMQ", seconds: 1.5 };
  return { label: "broker-less / SQLite", seconds: 0.3 };
}

function time(args: string[]): { ms: number; code: number | null } {
  const t = performance.now();
  const r = spawnSync(process.execPath, [bin, ...args], { stdio: "ignore", env });
  return { ms: performance.now() - t, code: r.status };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
type Row = [string, string, string, string, string];

function verdict(ms: number, targetS: number): string {
  return ms <= targetS * 1000 ? "met" : `missed by ${fmt(ms - targetS * 1000)}`;
}

function bench(label: string, args: string[], n: number, targetS: number | null): Row {
  const samples: number[] = [];
  let failures = 0;
  for (let i = 0; i < n; i++) {
    const { ms, code } = time(args);
    samples.push(ms);
    if (code !== 0) failures++;
  }
  const m = median(samples);
  const runsText = failures ? `${n} (${failures} non-zero exits)` : String(n);
  return [label, fmt(m), `${fmt(Math.min(...samples))}–${fmt(Math.max(...samples))}`, runsText, targetS === null ? "" : `≤ ${targetS} s: ${verdict(m, targetS)}`];
}

/** Save → result in watch mode: the time from rewriting the file to the next verdict line. */
async function watchRegrade(ex: Exercise, n: number): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), "msglab-bench-watch-"));
  const file = join(dir, ex.entry);
  copyFileSync(ex.solutionPath, file);
  const child = spawn(process.execPath, [bin, "run", ex.id, "--file", file, "--watch"], { env, stdio: ["ignore", "pipe", "ignore"] });
  let out = "";
  let waiter: (() => void) | null = null;
  child.stdout.on("data", (d: Buffer) => {
    out += d.toString();
    if (/(PASS|FAIL|ERROR) \d+\/\d+ checks/.test(out) && waiter) {
      out = "";
      const w = waiter;
      waiter = null;
      w();
    }
  });
  const nextVerdict = () => new Promise<void>((r) => (waiter = r));
  await nextVerdict();
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const seen = nextVerdict();
    const t = performance.now();
    writeFileSync(file, readFileSync(ex.solutionPath, "utf8") + `\n// save ${i}\n`);
    await seen;
    samples.push(performance.now() - t);
  }
  child.kill("SIGINT");
  rmSync(dir, { recursive: true, force: true });
  const m = median(samples);
  return [`watch: re-grade of ${ex.id} after a save`, fmt(m), `${fmt(Math.min(...samples))}–${fmt(Math.max(...samples))}`, String(n), `≤ 0.3 s: ${verdict(m, 0.3)}`];
}

function suiteRow(courseSize: number): Row {
  const f = join(LAB_ROOT, ".bench", "suite-timing.json");
  if (!existsSync(f)) return ["test suite, per exercise", "(run `npm test` first)", "", "", "≤ 60 s"];
  const t = JSON.parse(readFileSync(f, "utf8")) as { totalMs: number; at: string; node: string };
  const per = t.totalMs / courseSize;
  return [`test suite, per exercise (${fmt(t.totalMs)} / ${courseSize}, ${t.node}, ${t.at.slice(0, 16)})`, fmt(per), "", "1", `≤ 60 s: ${verdict(per, 60)}`];
}

const course = loadCourse();
const rows: Row[] = [];
rows.push(bench("msglab list", ["list"], runs, 0.12));
for (const ex of course) {
  const target = targetFor(ex);
  rows.push(bench(`run ${ex.id} (${target.label})`, ["run", ex.id, "--file", ex.solutionPath], runs, target.seconds));
}
const retry = course.find((e) => e.id === "retry-backoff");
if (retry) rows.push(await watchRegrade(retry, runs));
rows.push(bench("check --solutions (whole course)", ["check", "--solutions"], Math.max(1, Math.ceil(runs / 2)), null));
rows.push(suiteRow(course.length));

// Classroom grading: 30 students × every exercise, at several --jobs (BENCH_CLASS=1; minutes).
if (process.env.BENCH_CLASS) {
  const { plainClass } = await import("./support/class.ts");
  const roster = mkdtempSync(join(tmpdir(), "msglab-bench-class-"));
  const n = Number(process.env.BENCH_CLASS_STUDENTS ?? 30);
  plainClass(join(roster, "roster"), course.map((e) => e.id), n);
  for (const jobs of (process.env.BENCH_CLASS_JOBS ?? "1,2,4,8").split(",").map(Number)) {
    const out = join(roster, `out-${jobs}`);
    const t = performance.now();
    const r = spawnSync(process.execPath, [bin, "grade", join(roster, "roster"), "--out", out, "--jobs", String(jobs), "--json"], { env, encoding: "utf8" });
    const ms = performance.now() - t;
    const graded = n * course.length;
    const perMin = (graded / ms) * 60_000;
    rows.push([`grade ${n} students × ${course.length} exercises, --jobs ${jobs}`, fmt(ms), `${perMin.toFixed(0)} gradings/min`, r.status === 0 ? "1" : `1 (exit ${r.status})`, `≤ 180 s: ${verdict(ms, 180)}`]);
  }
  rmSync(roster, { recursive: true, force: true });
}

const head: Row = ["what", "median", "range", "runs", "target"];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (cells: string[]) => "| " + cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ") + " |";
console.log(line(head));
console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
for (const r of rows) console.log(line(r));
console.log(`\nNode ${process.version}, ${process.env.MSGLAB_SANDBOX ?? "default"} sandbox, BENCH_RUNS=${runs}.`);
