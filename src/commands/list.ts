import { loadCourse } from "../catalog/load.ts";
import { loadConfig, type ConfigFlags } from "../config.ts";
import { readStatuses, type ListedStatus } from "../workspace/status.ts";

export interface ListOptions extends ConfigFlags {
  json?: boolean;
}

export interface ListedExercise {
  order: number;
  id: string;
  title: string;
  topic: string;
  difficulty: string;
  seed: string | null;
  brokers: string[];
  status: ListedStatus;
  scaffold: string;
  solution: string;
}

/** Prints the course with each exercise's status. Loads no broker client and no native module. */
export async function list(opts: ListOptions): Promise<number> {
  const config = loadConfig(opts);
  const statuses = readStatuses(config.workspace);
  const rows: ListedExercise[] = loadCourse().map((ex) => ({
    order: ex.order,
    id: ex.id,
    title: ex.title,
    topic: ex.topic,
    difficulty: ex.difficulty,
    seed: ex.seed,
    brokers: ex.brokers,
    status: statuses[ex.id]?.status ?? "not-started",
    scaffold: ex.scaffoldPath,
    solution: ex.solutionPath,
  }));
  if (opts.json) {
    process.stdout.write(JSON.stringify({ version: 1, exercises: rows }, null, 2) + "\n");
    return 0;
  }
  const { style, printLine, progressBar } = await import("../ui/output.ts");
  const label: Record<ListedStatus, string> = {
    "not-started": style.dim("not started"),
    started: style.warn("started"),
    failing: style.bad("failing"),
    passed: style.ok("passed"),
  };
  let topic = "";
  for (const r of rows) {
    if (r.topic !== topic) {
      topic = r.topic;
      printLine(style.title(`\n${topic}`));
    }
    const seed = r.seed ? style.dim(` [${r.seed}]`) : "";
    printLine(`  ${String(r.order).padStart(2)}. ${r.id.padEnd(28)} ${label[r.status].padEnd(22)} ${r.title}${seed} ${style.dim(r.brokers.join("+") || "no broker")}`);
  }
  printLine(`\n  progress ${progressBar(rows.filter((r) => r.status === "passed").length, rows.length)}`);
  printLine(style.dim(`  next: msglab run <id>   (workspace: ${config.workspace})`));
  return 0;
}
