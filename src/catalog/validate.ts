import { BROKERS, DIFFICULTIES, type ExerciseMeta, type QuizQuestion } from "./types.ts";

/**
 * Checks parsed exercise.json content field by field. Errors name the field, so a broken
 * exercise says exactly what to fix; the caller adds the file.
 */
export function validateMeta(raw: unknown): { meta?: ExerciseMeta; errors: string[] } {
  const errors: string[] = [];
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    return { errors: ["the file must hold a JSON object"] };
  }
  const o = raw as Record<string, unknown>;
  const str = (field: string, pattern?: RegExp): string => {
    const v = o[field];
    if (typeof v !== "string" || v.trim() === "") errors.push(`"${field}" must be a non-empty string`);
    else if (pattern && !pattern.test(v)) errors.push(`"${field}" must match ${pattern} (got "${v}")`);
    return typeof v === "string" ? v : "";
  };
  const strList = (field: string, min: number): string[] => {
    const v = o[field];
    if (!Array.isArray(v) || v.length < min || v.some((x: unknown) => typeof x !== "string" || x.trim() === "")) {
      errors.push(min ? `"${field}" must be a list of at least ${min} non-empty strings` : `"${field}" must be a list of non-empty strings`);
      return [];
    }
    return v as string[];
  };

  const id = str("id", /^[a-z0-9]+(-[a-z0-9]+)*$/);
  const title = str("title");
  const topic = str("topic", /^[a-z0-9-]+$/);
  const difficulty = o.difficulty as ExerciseMeta["difficulty"];
  if (!DIFFICULTIES.includes(difficulty)) errors.push(`"difficulty" must be one of ${DIFFICULTIES.join(", ")}`);
  // An empty list is fine: some exercises (backoff on a virtual clock) need no broker at all.
  const brokers = strList("brokers", 0) as ExerciseMeta["brokers"];
  for (const b of brokers) if (!BROKERS.includes(b)) errors.push(`"brokers" has "${b}"; allowed: ${BROKERS.join(", ")}`);
  const seed = o.seed === null ? null : str("seed", /^S([1-9]|1[0-9]|20)$/);
  const entry = str("entry", /^[a-z0-9-]+\.ts$/);
  const timeoutMs = o.timeoutMs;
  if (typeof timeoutMs !== "number" || !Number.isInteger(timeoutMs) || timeoutMs < 1000) {
    errors.push(`"timeoutMs" must be an integer of at least 1000`);
  }
  const memoryMb = o.memoryMb;
  if (memoryMb !== undefined && (typeof memoryMb !== "number" || !Number.isInteger(memoryMb) || memoryMb < 64 || memoryMb > 8192)) {
    errors.push(`"memoryMb" must be an integer from 64 to 8192`);
  }
  const hints = strList("hints", 2);
  const quiz: QuizQuestion[] = [];
  if (!Array.isArray(o.quiz) || o.quiz.length === 0) errors.push(`"quiz" must be a non-empty list`);
  else {
    o.quiz.forEach((q: unknown, i: number) => {
      const at = `"quiz[${i}]"`;
      const qq = q as Partial<QuizQuestion> | null;
      if (!qq || typeof qq.question !== "string" || !qq.question) errors.push(`${at}.question must be a string`);
      if (!qq || !Array.isArray(qq.choices) || qq.choices.length < 2 || qq.choices.some((c) => typeof c !== "string")) {
        errors.push(`${at}.choices must list at least two strings`);
      } else if (typeof qq.answer !== "number" || !Number.isInteger(qq.answer) || qq.answer < 0 || qq.answer >= qq.choices.length) {
        errors.push(`${at}.answer must be an index into choices`);
      }
      if (!qq || typeof qq.explanation !== "string" || !qq.explanation) errors.push(`${at}.explanation must be a string`);
      if (qq) quiz.push(qq as QuizQuestion);
    });
  }
  const known = new Set(["id", "title", "topic", "difficulty", "brokers", "seed", "entry", "timeoutMs", "memoryMb", "hints", "quiz", "$schema"]);
  for (const k of Object.keys(o)) if (!known.has(k)) errors.push(`"${k}" is not a known field`);
  if (errors.length) return { errors };
  return {
    errors,
    meta: { id, title, topic, difficulty, brokers, seed, entry, timeoutMs: timeoutMs as number, ...(memoryMb === undefined ? {} : { memoryMb: memoryMb as number }), hints, quiz },
  };
}
