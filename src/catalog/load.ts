import { existsSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { MsglabError, usageError } from "../errors.ts";
import { EXERCISES_DIR, LAB_ROOT, SOLUTIONS_DIR } from "../paths.ts";
import type { Exercise } from "./types.ts";
import { validateMeta } from "./validate.ts";

/** `exercises/course.json`: the one ordered course list, as exercise folders. */
export const COURSE_FILE = join(EXERCISES_DIR, "course.json");

function readJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    throw new MsglabError(`${relative(LAB_ROOT, file)} is missing.`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new MsglabError(`${relative(LAB_ROOT, file)} is not valid JSON: ${(e as Error).message}`);
  }
}

let cached: Exercise[] | undefined;

/**
 * Loads and validates the whole course. Any broken exercise stops the load with an error that
 * names the file and the field, because a half-loaded course would grade the wrong things.
 */
export function loadCourse(root = EXERCISES_DIR, solutions = SOLUTIONS_DIR): Exercise[] {
  if (cached && root === EXERCISES_DIR) return cached;
  const courseFile = join(root, "course.json");
  const dirs = readJson(courseFile);
  if (!Array.isArray(dirs) || dirs.some((d) => typeof d !== "string" || !/^\d\d-[a-z0-9-]+\/[a-z0-9-]+$/.test(d))) {
    throw new MsglabError(`${relative(LAB_ROOT, courseFile)} must be a list of "NN-topic/slug" folders.`);
  }
  const seen = new Set<string>();
  const course = (dirs as string[]).map((dir, i) => {
    const ex = loadExercise(dir, i + 1, root, solutions);
    if (seen.has(ex.id)) throw new MsglabError(`${relative(LAB_ROOT, courseFile)} lists "${ex.id}" twice.`);
    seen.add(ex.id);
    return ex;
  });
  if (root === EXERCISES_DIR) cached = course;
  return course;
}

export function findExercise(id: string, course = loadCourse()): Exercise {
  const ex = course.find((e) => e.id === id || String(e.order) === id);
  if (!ex) {
    const near = course.filter((e) => e.id.includes(id) || id.includes(e.id)).map((e) => e.id);
    const also = near.length ? ` Did you mean ${near.join(", ")}?` : "";
    throw usageError(`There is no exercise "${id}".${also} Run \`msglab list\` to see them all.`);
  }
  return ex;
}

/** Loads and validates one exercise folder ("02-rabbitmq/priority-queue"). */
export function loadExercise(dir: string, order: number, root = EXERCISES_DIR, solutions = SOLUTIONS_DIR): Exercise {
  const exerciseDir = join(root, dir);
  const file = join(exerciseDir, "exercise.json");
  const { meta, errors } = validateMeta(readJson(file));
  const where = relative(LAB_ROOT, file);
  if (!meta) throw new MsglabError(`${where}: ${errors.join("; ")}`);
  const [topicDir, slug] = dir.split("/") as [string, string];
  if (meta.id !== slug) throw new MsglabError(`${where}: "id" is "${meta.id}" but the folder is "${slug}"; make them match.`);
  if (topicDir.slice(3) !== meta.topic) {
    throw new MsglabError(`${where}: "topic" is "${meta.topic}" but the folder is "${topicDir}"; make them match.`);
  }
  const ex: Exercise = {
    ...meta,
    order,
    dir,
    exerciseDir,
    scaffoldPath: join(exerciseDir, meta.entry),
    solutionPath: join(solutions, dir, meta.entry),
    graderPath: join(exerciseDir, "grader.ts"),
    briefPath: join(exerciseDir, "README.md"),
  };
  const required = [["entry", ex.scaffoldPath], ["entry (solution)", ex.solutionPath], ["grader", ex.graderPath], ["brief", ex.briefPath]] as const;
  for (const [field, path] of required) {
    if (!existsSync(path)) throw new MsglabError(`${where}: "${field}" points at ${relative(LAB_ROOT, path)}, which does not exist.`);
  }
  return ex;
}
