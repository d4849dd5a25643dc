/**
 * Compiles a submission once per grading: one ESM bundle that every host of the grading loads.
 * Bundling is also where imports are decided, before any of the learner's code runs:
 * - relative imports only inside the submission's own folder (symlinks resolved);
 * - bare imports only of the libraries the lab provides, rewritten to the lab's own install;
 * - `msglab/contracts/<slug>` inlined from src/contracts (types and constants, nothing else);
 * - Node built-ins.
 * Anything else (a solution, a grader, the kit) is refused with the reason.
 */
import { existsSync, realpathSync } from "node:fs";
import { builtinModules, createRequire } from "node:module";
import { dirname, isAbsolute, join, relative, resolve as resolvePath } from "node:path";
import type { Plugin } from "esbuild";
import { LAB_ROOT } from "../paths.ts";

/** What a submission may import by name. */
export const ALLOWED_PACKAGES = ["amqplib", "kafkajs", "better-sqlite3", "zeromq"] as const;

const CONTRACTS_DIR = join(LAB_ROOT, "src", "contracts");
const labRequire = createRequire(join(LAB_ROOT, "package.json"));
const builtins = new Set(builtinModules);

export type CompileResult = { ok: true; bundle: string } | { ok: false; kind: "syntax" | "import"; message: string };

function inside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

function packageName(spec: string): string {
  const parts = spec.split("/");
  return spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
}

function importPolicy(submissionDir: string): Plugin {
  const root = realpathSync(submissionDir);
  return {
    name: "msglab-import-policy",
    setup(build) {
      build.onResolve({ filter: /.*/ }, (args) => {
        const spec = args.path;
        if (args.kind === "entry-point") return undefined;
        if (spec.startsWith("node:") || builtins.has(spec)) return { path: spec, external: true };
        const contract = /^msglab\/contracts\/([a-z0-9-]+)$/.exec(spec);
        if (contract) {
          const file = join(CONTRACTS_DIR, `${contract[1]}.ts`);
          if (!existsSync(file)) return { errors: [{ text: `There is no contract "${spec}". The scaffold's import line names the right one.` }] };
          return { path: file };
        }
        if (spec.startsWith(".") || spec.startsWith("/") || spec.startsWith("file:")) {
          const importer = args.importer;
          // The contracts may import each other's types; nothing of the lab at run time.
          if (inside(CONTRACTS_DIR, importer)) {
            const target = resolvePath(dirname(importer), spec);
            if (inside(CONTRACTS_DIR, target)) return undefined;
            // A type-only import from a contract (the clock's type, say) is erased; mark it external
            // so esbuild need not read it. If a value were imported, the host would fail to load it.
            return { path: spec, external: true, sideEffects: false };
          }
          const target = resolvePath(dirname(importer), spec.replace(/^file:\/\//, ""));
          let real = target;
          for (const candidate of [target, `${target}.ts`, `${target}.js`, `${target}.mts`, join(target, "index.ts")]) {
            if (existsSync(candidate)) {
              real = realpathSync(candidate);
              break;
            }
          }
          if (!inside(root, real)) {
            return { errors: [{ text: `"${spec}" is outside your exercise folder. A submission may import only files beside it, the lab's libraries (${ALLOWED_PACKAGES.join(", ")}), msglab/contracts/<exercise> and Node built-ins.` }] };
          }
          return { path: real };
        }
        const name = packageName(spec);
        if (!(ALLOWED_PACKAGES as readonly string[]).includes(name)) {
          return { errors: [{ text: `"${spec}" cannot be imported here. A submission may import ${ALLOWED_PACKAGES.join(", ")}, msglab/contracts/<exercise> and Node built-ins.` }] };
        }
        let file: string;
        try {
          file = labRequire.resolve(spec);
        } catch {
          return { errors: [{ text: `"${spec}" is not installed in the lab. Run \`npm ci\` in the lab folder.` }] };
        }
        return { path: file, external: true };
      });
    },
  };
}

/** Bundles `file` into `outFile`. Errors come back as a learner-facing message (file:line:col). */
export async function compileSubmission(file: string, outFile: string): Promise<CompileResult> {
  const esbuild = await import("esbuild");
  try {
    await esbuild.build({
      entryPoints: [file],
      outfile: outFile,
      // Errors then name the file as the learner knows it ("retry.ts:12:5"), not by a path from /tmp.
      absWorkingDir: dirname(file),
      bundle: true,
      format: "esm",
      platform: "node",
      target: "node20",
      sourcemap: "inline",
      logLevel: "silent",
      // Node's resolver reads absolute paths; `require` of them works through createRequire.
      banner: { js: 'import { createRequire as __msglabCreateRequire } from "node:module"; const require = __msglabCreateRequire(import.meta.url);' },
      plugins: [importPolicy(dirname(file))],
      write: true,
    });
    return { ok: true, bundle: outFile };
  } catch (e) {
    const errors = (e as { errors?: { text: string; location?: { file: string; line: number; column: number; lineText?: string } | null; pluginName?: string }[] }).errors ?? [];
    if (errors.length === 0) return { ok: false, kind: "syntax", message: (e as Error).message };
    const first = errors[0]!;
    const where = first.location ? `${first.location.file}:${first.location.line}:${first.location.column + 1}: ` : "";
    const kind = first.pluginName === "msglab-import-policy" ? "import" : "syntax";
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : "";
    return { ok: false, kind, message: `${where}${first.text}${more}` };
  }
}
