import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { homedir } from "node:os";

/** Set by the lab's build (src/build/lab-build.mjs); absent when the sources run directly (tests). */
declare const __MSGLAB_LAB_ROOT__: string | undefined;

/** The lab's own install: where exercises, solutions and node_modules live. */
export const LAB_ROOT = typeof __MSGLAB_LAB_ROOT__ === "string" ? __MSGLAB_LAB_ROOT__ : join(dirname(fileURLToPath(import.meta.url)), "..");
export const EXERCISES_DIR = join(LAB_ROOT, "exercises");
export const SOLUTIONS_DIR = join(LAB_ROOT, "solutions");
export const MUTANTS_DIR = join(LAB_ROOT, "test", "mutants");

/** Broker jars, Kafka data, the lab's build and pid files live outside the repo, shared by every clone. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MSGLAB_CACHE_DIR) return env.MSGLAB_CACHE_DIR;
  const base = env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(base, "msglab");
}
