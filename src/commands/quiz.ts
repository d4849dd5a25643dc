import { loadCourse, findExercise } from "../catalog/load.ts";
import { MsglabError } from "../errors.ts";

/** Asks an exercise's concept questions (or a few from the whole course) and explains each answer. */
export async function quiz(id: string | undefined): Promise<number> {
  if (!process.stdin.isTTY) throw new MsglabError("The quiz is interactive: run `msglab quiz` in a terminal.");
  const exercises = id ? [findExercise(id)] : loadCourse();
  const { choose } = await import("../ui/prompts.ts");
  const { printLine, style } = await import("../ui/output.ts");
  let right = 0;
  let asked = 0;
  for (const ex of exercises) {
    for (const q of ex.quiz) {
      asked++;
      const picked = await choose(`${style.dim(`[${ex.id}]`)} ${q.question}`, q.choices.map((c, i) => ({ name: c, value: String(i) })));
      if (Number(picked) === q.answer) {
        right++;
        printLine(style.ok("✓ right. ") + q.explanation);
      } else {
        printLine(style.bad("✗ not quite. ") + `The answer is: ${q.choices[q.answer]}. ${q.explanation}`);
      }
      printLine();
    }
  }
  printLine(`${right}/${asked} right.`);
  return 0;
}
