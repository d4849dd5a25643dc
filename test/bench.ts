/**
 * `npm run bench`: median wall time of the real CLI, as a learner feels it. Prints a table and
 * asserts nothing. BENCH_RUNS sets how many runs each median takes (default 5).
 */
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { loadCourse } from "../src/catalog/load.ts";
import { LAB_ROOT } from "../src/paths.ts";

const runs = Number(process.env.BENCH_RUNS ?? 5);
const bin = join(LAB_ROOT, "bin", "msglab.js");

function time(args: string[]): { ms: number; code: number | null } {
  const t = performance.now();
  const r = spawnSync(process.execPath, [bin, ...args], { stdio: "ignore", env: { ...process.env, MSGLAB_WORKSPACE: join(LAB_ROOT, ".bench", "ws") } });
  return { ms: performance.now() - t, code: r.status };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function bench(label: string, args: string[], n: number): [string, string, string, string] {
  const samples: number[] = [];
  let failures = 0;
  for (let i = 0; i < n; i++) {
    const { ms, code } = time(args);
    samples.push(ms);
    if (code !== 0) failures++;
  }
  const fmt = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  return [label, fmt(median(samples)), `${fmt(Math.min(...samples))}–${fmt(Math.max(...samples))}`, failures ? `${failures}/${n} non-zero exits` : `${n} runs`];
}

const rows: [string, string, string, string][] = [];
rows.push(bench("msglab list", ["list"], runs));
for (const ex of loadCourse()) rows.push(bench(`run ${ex.id} --file <solution>`, ["run", ex.id, "--file", ex.solutionPath], runs));
rows.push(bench("check --solutions (whole course)", ["check", "--solutions"], Math.max(1, Math.ceil(runs / 2))));

const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i]!.length), ["what", "median", "range", "runs"][i]!.length));
const line = (cells: string[]) => "| " + cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ") + " |";
console.log(line(["what", "median", "range", "runs"]));
console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
for (const r of rows) console.log(line(r));
