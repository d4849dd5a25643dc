import { findExercise } from "../catalog/load.ts";
import { loadConfig, type ConfigFlags } from "../config.ts";

/** Shows the next hint each call, and all hints seen so far. */
export async function hint(id: string, opts: ConfigFlags): Promise<number> {
  const config = loadConfig(opts);
  const ex = findExercise(id);
  const { ProgressStore } = await import("../workspace/progress.ts");
  const store = await ProgressStore.open(config.workspace);
  let seen: number;
  try {
    seen = store.nextHint(ex.id, ex.hints.length);
  } finally {
    store.close();
  }
  const { printLine, style } = await import("../ui/output.ts");
  ex.hints.slice(0, seen).forEach((h, i) => printLine(`${style.code(`hint ${i + 1}/${ex.hints.length}:`)} ${h}`));
  if (seen >= ex.hints.length) printLine(style.dim(`That was the last hint. \`msglab solution ${ex.id}\` shows the reference.`));
  return 0;
}
