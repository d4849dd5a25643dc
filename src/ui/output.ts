/** The one place that writes styled text (chalk lives here and in prompts only). */
import chalk from "chalk";
import type { RunResult, Status } from "../grading/result.ts";

export const style = {
  title: (s: string) => chalk.bold(s),
  dim: (s: string) => chalk.dim(s),
  ok: (s: string) => chalk.green(s),
  bad: (s: string) => chalk.red(s),
  warn: (s: string) => chalk.yellow(s),
  code: (s: string) => chalk.cyan(s),
};

const mark: Record<Status, string> = { pass: "✓", fail: "✗", error: "!" };
const paint: Record<Status, (s: string) => string> = { pass: chalk.green, fail: chalk.red, error: chalk.yellow };

export function printLine(s = ""): void {
  process.stdout.write(s + "\n");
}

export function printError(s: string): void {
  process.stderr.write(chalk.red("✗ ") + s + "\n");
}

/** A line per check, the hint under each failure, the seed to replay it. */
export function formatResult(r: RunResult): string {
  const out: string[] = [];
  out.push(chalk.bold(`${r.exercise}`) + chalk.dim(`  ${r.submission}`));
  for (const c of r.tests) {
    const time = chalk.dim(` ${c.durationMs} ms`);
    out.push(`  ${paint[c.status](mark[c.status])} ${c.name}${c.status === "pass" ? time : ""}`);
    if (c.status !== "pass" && c.message) out.push(indent(c.message, 6));
    if (c.status !== "pass" && c.output) out.push(chalk.dim(indent("your code printed:\n" + c.output.split("\n").slice(-6).join("\n"), 6)));
    if (c.hint) out.push(indent(chalk.cyan("hint: ") + c.hint, 6));
  }
  const verdict = r.status === "pass" ? chalk.green("PASS") : r.status === "fail" ? chalk.red("FAIL") : chalk.yellow("ERROR");
  out.push(`  ${verdict} ${r.score}/${r.maxScore} checks · ${(r.durationMs / 1000).toFixed(1)} s · seed ${r.seed}` + chalk.dim(` (replay: --seed ${r.seed})`));
  if (r.status === "error" && r.output) out.push(chalk.dim(indent("output:\n" + r.output.split("\n").slice(-8).join("\n"), 4)));
  for (const w of r.warnings) out.push(chalk.yellow(indent(`warning: ${w}`, 2)));
  if (r.sandbox === "permission") out.push(chalk.dim("  (sandbox: Node's permission model only; install bubblewrap for the full sandbox, see `msglab doctor`)"));
  return out.join("\n");
}

function indent(s: string, n: number): string {
  const pad = " ".repeat(n);
  return s
    .split("\n")
    .map((l) => pad + l)
    .join("\n");
}

export function progressBar(done: number, total: number, width = 24): string {
  const filled = total === 0 ? 0 : Math.round((done / total) * width);
  return chalk.green("█".repeat(filled)) + chalk.dim("░".repeat(width - filled)) + ` ${done}/${total}`;
}
