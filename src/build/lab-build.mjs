// The lab compiles its own TypeScript once (esbuild), into a cache keyed by the content of its
// sources, so no process pays for on-the-fly compilation: the CLI, the grading process and the
// submission host all start from plain JavaScript. Plain JS itself, because the bin shim loads it.
//
// Layout of one build, <cache>/build/<hash>/:
//   lab/   src/cli.js, src/grading/child.js and every grader, code-split so they share the kit;
//   host/  main.js: the submission host, bundled alone (it must not contain the kit).
// Bare imports are rewritten to absolute paths inside the lab's node_modules, so a build works
// from any folder, and the host's view needs only node_modules and host/.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

/* global __MSGLAB_LAB_ROOT__ */
// Inside a build, this file is bundled too: the lab's location is then compiled in.
export const LAB_ROOT = typeof __MSGLAB_LAB_ROOT__ === "string" ? __MSGLAB_LAB_ROOT__ : join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Folders whose TypeScript goes into a build, and what of them. */
const SOURCES = [
  { dir: "src", test: (f) => /\.(ts|mjs)$/.test(f) && !f.endsWith(".test.ts") },
  { dir: "exercises", test: (f) => f.endsWith(".ts") },
  { dir: join("test", "fixtures", "exercises"), test: (f) => f.endsWith(".ts") },
];

function cacheRoot(env = process.env) {
  if (env.MSGLAB_CACHE_DIR) return env.MSGLAB_CACHE_DIR;
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "msglab");
}

function walk(dir, test, out) {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== "node_modules") walk(p, test, out);
    } else if (test(e.name)) out.push(p);
  }
}

function sourceFiles() {
  const files = [];
  for (const s of SOURCES) walk(join(LAB_ROOT, s.dir), s.test, files);
  return files.sort();
}

/** The build's key: every source byte, the lab's location, and the toolchain. */
function contentHash(files) {
  const h = createHash("sha256");
  h.update(`v3\0${LAB_ROOT}\0${process.versions.node.split(".")[0]}\0`);
  h.update(readFileSync(join(LAB_ROOT, "package.json")));
  for (const f of files) {
    h.update(relative(LAB_ROOT, f) + "\0");
    h.update(readFileSync(f));
    h.update("\0");
  }
  return h.digest("hex").slice(0, 16);
}

function externals(esbuild) {
  return {
    name: "msglab-absolute-externals",
    setup(build) {
      build.onResolve({ filter: /^[^./]/ }, async (args) => {
        if (args.path.startsWith("node:") || args.pluginData?.fromPlugin) return undefined;
        const { builtinModules } = await import("node:module");
        if (builtinModules.includes(args.path)) return { path: args.path, external: true };
        const r = await build.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir || LAB_ROOT, pluginData: { fromPlugin: true } });
        if (r.errors.length) return { errors: r.errors };
        return { path: r.path, external: true };
      });
    },
  };
}

async function build(out, files) {
  const esbuild = await import("esbuild");
  const graders = files.filter((f) => f.endsWith("/grader.ts") && !f.startsWith(join(LAB_ROOT, "src")));
  const common = {
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    sourcemap: "linked",
    logLevel: "error",
    define: { __MSGLAB_LAB_ROOT__: JSON.stringify(LAB_ROOT) },
    plugins: [externals(esbuild)],
  };
  await esbuild.build({
    ...common,
    entryPoints: [join(LAB_ROOT, "src", "cli.ts"), join(LAB_ROOT, "src", "grading", "child.ts"), ...graders],
    outdir: join(out, "lab"),
    outbase: LAB_ROOT,
    splitting: true,
    chunkNames: "chunks/[name]-[hash]",
  });
  await esbuild.build({
    ...common,
    entryPoints: [join(LAB_ROOT, "src", "host", "main.ts")],
    outdir: join(out, "host"),
    outbase: join(LAB_ROOT, "src", "host"),
  });
  writeFileSync(join(out, "ok"), new Date().toISOString());
}

let memo;

/**
 * The folder of the current build, made first if the sources changed. Concurrent first runs
 * each build into a folder of their own and the first rename wins, so nobody sees half a build.
 */
export async function labBuild() {
  if (memo) return memo;
  const files = sourceFiles();
  const hash = contentHash(files);
  const root = join(cacheRoot(), "build");
  const dir = join(root, hash);
  if (existsSync(join(dir, "ok"))) return (memo = dir);
  mkdirSync(root, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  try {
    await build(tmp, files);
    try {
      renameSync(tmp, dir);
    } catch {
      // Another process finished first: its build is the same.
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  pruneOld(root, hash);
  return (memo = dir);
}

/** Keeps the cache small: builds not used for a day go. */
function pruneOld(root, keep) {
  const dayAgo = Date.now() - 24 * 3600 * 1000;
  for (const name of readdirSync(root)) {
    if (name === keep) continue;
    const p = join(root, name);
    try {
      if (statSync(p).mtimeMs < dayAgo) rmSync(p, { recursive: true, force: true });
    } catch {
      // Someone else pruned it.
    }
  }
}

/** Where a lab source file ends up in a build. */
export function builtPath(buildDir, sourceFile) {
  return join(buildDir, "lab", relative(LAB_ROOT, sourceFile)).replace(/\.ts$/, ".js");
}
