import { loadCourse } from "../catalog/load.ts";
import { loadConfig, type ConfigFlags } from "../config.ts";
import { readStatuses } from "../workspace/status.ts";

/** `msglab` with no arguments: continue where you left off, or pick something to do. */
export async function menu(opts: ConfigFlags): Promise<number> {
  if (!process.stdin.isTTY) {
    const { list } = await import("./list.ts");
    return list(opts);
  }
  const config = loadConfig(opts);
  const course = loadCourse();
  const statuses = readStatuses(config.workspace);
  const next = course.find((e) => statuses[e.id]?.status !== "passed") ?? course[0]!;
  const { choose } = await import("../ui/prompts.ts");
  const action = await choose("msglab: what next?", [
    { name: `Continue: ${next.id} (${next.title})`, value: "continue" },
    { name: "Pick an exercise", value: "pick" },
    { name: `Hint for ${next.id}`, value: "hint" },
    { name: "Quiz", value: "quiz" },
    { name: "Progress", value: "list" },
  ]);
  if (action === "list") return (await import("./list.ts")).list(opts);
  if (action === "quiz") return (await import("./quiz.ts")).quiz(undefined);
  if (action === "hint") return (await import("./hint.ts")).hint(next.id, opts);
  let id = next.id;
  if (action === "pick") {
    id = await choose(
      "Which exercise?",
      course.map((e) => ({ name: `${String(e.order).padStart(2)}. ${e.id} · ${statuses[e.id]?.status ?? "not started"}`, value: e.id, description: e.title })),
    );
  }
  return (await import("./run.ts")).run(id, opts);
}
