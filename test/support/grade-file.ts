// Dev aid: grade one file against one exercise folder without the CLI or the course list.
//   node --import tsx test/support/grade-file.ts 02-rabbitmq/priority-queue <file.ts> [seed]
import { loadExercise } from "../../src/catalog/load.ts";
import { loadConfig } from "../../src/config.ts";
import { gradeSubmission } from "../../src/grading/engine.ts";

const [dir, file, seed] = process.argv.slice(2);
if (!dir || !file) {
  console.error("usage: grade-file.ts <NN-topic/slug> <file.ts> [seed]");
  process.exit(2);
}
const result = await gradeSubmission(loadExercise(dir, 0), file, { config: loadConfig(), seed: seed ? Number(seed) : undefined });
for (const c of result.checks) console.log(`${c.status.padEnd(5)} ${c.name} (${c.durationMs} ms)${c.message ? "\n      " + c.message : ""}`);
console.log(`=> ${result.status}: ${result.message} [seed ${result.seed}, ${result.durationMs} ms]`);
