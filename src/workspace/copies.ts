import { copyFileSync, existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import type { Exercise } from "../catalog/types.ts";
import { LAB_ROOT } from "../paths.ts";

/** The learner's copy of an exercise: `<workspace>/<id>/<entry>`. */
export function learnerFile(workspace: string, ex: Exercise): string {
  return join(workspace, ex.id, ex.entry);
}

/** Creates the learner's copy from the scaffold if it is missing. Returns true when it created it. */
export function ensureLearnerCopy(workspace: string, ex: Exercise): boolean {
  const file = learnerFile(workspace, ex);
  writeEditorConfig(workspace);
  if (existsSync(file)) return false;
  mkdirSync(dirname(file), { recursive: true });
  copyFileSync(ex.scaffoldPath, file);
  return true;
}

/**
 * Restores the scaffold. The learner's work is moved aside first, never deleted: a reset
 * typed by mistake must lose nothing. Returns where the old copy went, if there was one.
 */
export function resetLearnerCopy(workspace: string, ex: Exercise): string | null {
  const file = learnerFile(workspace, ex);
  let backup: string | null = null;
  if (existsSync(file)) {
    const dir = join(workspace, ".msglab", "backups");
    mkdirSync(dir, { recursive: true });
    backup = join(dir, `${ex.id}-${new Date().toISOString().replace(/[:.]/g, "-")}.ts`);
    renameSync(file, backup);
  }
  ensureLearnerCopy(workspace, ex);
  return backup;
}

/**
 * A tsconfig beside the learner's files so an editor resolves amqplib, kafkajs and the
 * contracts from the lab's install, the same way the grader does.
 */
function writeEditorConfig(workspace: string): void {
  const file = join(workspace, "tsconfig.json");
  if (existsSync(file)) return;
  mkdirSync(workspace, { recursive: true });
  const lab = relative(workspace, LAB_ROOT) || ".";
  const config = {
    compilerOptions: {
      target: "ES2022",
      module: "NodeNext",
      moduleResolution: "NodeNext",
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      allowImportingTsExtensions: true,
      types: ["node"],
      typeRoots: [`${lab}/node_modules/@types`],
      baseUrl: ".",
      paths: {
        "msglab/contracts/*": [`${lab}/src/contracts/*.ts`],
        "*": [`${lab}/node_modules/*`, `${lab}/node_modules/@types/*`],
      },
    },
    include: ["**/*.ts"],
  };
  writeFileSync(file, JSON.stringify(config, null, 2) + "\n");
  // "type": "module" so editors treat the learner's files as ESM, as the grader does.
  const pkg = join(workspace, "package.json");
  if (!existsSync(pkg)) writeFileSync(pkg, JSON.stringify({ private: true, type: "module" }, null, 2) + "\n");
}
