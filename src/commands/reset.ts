import { findExercise } from "../catalog/load.ts";
import { loadConfig, type ConfigFlags } from "../config.ts";
import { learnerFile, resetLearnerCopy } from "../workspace/copies.ts";

/** Restores the scaffold; the learner's old copy is kept in .msglab/backups. */
export async function reset(id: string, opts: ConfigFlags): Promise<number> {
  const config = loadConfig(opts);
  const ex = findExercise(id);
  const backup = resetLearnerCopy(config.workspace, ex);
  const { printLine, style } = await import("../ui/output.ts");
  printLine(style.ok(`Restored the scaffold at ${learnerFile(config.workspace, ex)}.`));
  if (backup) printLine(style.dim(`Your previous version is saved at ${backup}.`));
  return 0;
}
