// Dev aid: grade one file against one exercise without the CLI.
// node --import tsx test/support/grade-file.ts <exercise-id> <file> [seed]
import { findExercise } from "../../src/catalog/load.ts";
import { loadConfig } from "../../src/config.ts";
import { gradeSubmission } from "../../src/grading/engine.ts";

const [id, file, seed] = process.argv.slice(2);
if (!id || !file) {
  console.error("usage: grade-file.ts <exercise-id> <file> [seed]");
  process.exit(2);
}
const result = await gradeSubmission(findExercise(id), file, { config: loadConfig(), seed: seed ? Number(seed) : undefined });
console.log(JSON.stringify(result, null, 2));
