import { readFileSync } from "node:fs";
import { findExercise } from "../catalog/load.ts";
import { MsglabError } from "../errors.ts";

export interface SolutionOptions {
  yes?: boolean;
}

/** Reveals the reference solution, after asking: seeing it too early spoils the exercise. */
export async function solution(id: string, opts: SolutionOptions): Promise<number> {
  const ex = findExercise(id);
  if (!opts.yes) {
    if (!process.stdin.isTTY) throw new MsglabError(`Revealing the solution needs a yes: run \`msglab solution ${ex.id} --yes\`.`);
    const { confirm } = await import("../ui/prompts.ts");
    if (!(await confirm(`Show the reference solution for ${ex.id}? Trying the hints first (\`msglab hint ${ex.id}\`) teaches more.`))) return 0;
  }
  const { printLine, style } = await import("../ui/output.ts");
  printLine(style.dim(`// ${ex.solutionPath}`));
  printLine(readFileSync(ex.solutionPath, "utf8"));
  return 0;
}
