/**
 * What the host locks down before the submission loads. Node's permission model asks nothing of
 * native code, and SQLite is native: `VACUUM INTO '/anywhere'`, `ATTACH`, a `file:` URI or
 * `db.backup(path)` would write wherever the process may. So the host wraps SQLite at its native
 * binding (the one chokepoint every route goes through: the public API and `db[cppdb]` alike),
 * then forbids loading any further addon. Under bubblewrap the file system is read-only outside
 * the host's folder anyway; this is what keeps the permission-model-only mode honest.
 */
import { createRequire } from "node:module";
import { isAbsolute, join, relative, resolve } from "node:path";

/** Strips comments, string literals and quoted identifiers, then upper-cases: what is left is keywords. */
export function sqlKeywords(sql: string): string[] {
  const out: string[] = [];
  let i = 0;
  let word = "";
  const flush = () => {
    if (word) out.push(word.toUpperCase());
    word = "";
  };
  while (i < sql.length) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === "-" && next === "-") {
      flush();
      const nl = sql.indexOf("\n", i);
      i = nl < 0 ? sql.length : nl + 1;
    } else if (c === "/" && next === "*") {
      flush();
      const end = sql.indexOf("*/", i + 2);
      i = end < 0 ? sql.length : end + 2;
    } else if (c === "'" || c === '"' || c === "`" || c === "[") {
      flush();
      const close = c === "[" ? "]" : c;
      let j = i + 1;
      for (;;) {
        const k = sql.indexOf(close, j);
        if (k < 0) {
          j = sql.length;
          break;
        }
        // A doubled quote is an escaped quote inside the literal.
        if (close !== "]" && sql[k + 1] === close) {
          j = k + 2;
          continue;
        }
        j = k + 1;
        break;
      }
      out.push(c === "'" ? "'" : '"');
      i = j;
    } else if (/[A-Za-z0-9_$]/.test(c)) {
      word += c;
      i++;
    } else {
      flush();
      i++;
    }
  }
  flush();
  return out;
}

/** Why this SQL may not run in a host, or null. */
export function forbiddenSql(sql: string): string | null {
  const words = sqlKeywords(sql);
  if (words.includes("ATTACH") || words.includes("DETACH")) return "ATTACH opens another database file";
  if (words.includes("LOAD_EXTENSION")) return "load_extension loads native code";
  for (let i = 0; i < words.length; i++) {
    if (words[i] === "VACUUM" && words.slice(i + 1).includes("INTO")) return "VACUUM INTO writes a copy to another file";
  }
  return null;
}

function inside(dir: string, path: string): boolean {
  const rel = relative(dir, resolve(path));
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

/**
 * Loads better-sqlite3 and wraps its native binding: databases only in `dirs` (or in memory),
 * no ATTACH, VACUUM INTO, extensions, or backups outside `dirs`.
 */
export async function guardSqlite(dirs: string[], nodeModules: string): Promise<void> {
  const allowed = (p: string) => dirs.some((d) => inside(d, p));
  const Database = (await import("better-sqlite3")).default as unknown as new (path: string) => { close(): void };
  // @ts-expect-error: better-sqlite3's internals have no types
  const util = (await import("better-sqlite3/lib/util.js")).default as { cppdb: symbol };
  const probe = new Database(":memory:") as unknown as Record<symbol, object>;
  const native = probe[util.cppdb]!;
  (probe as unknown as { close(): void }).close();
  const NativeDb = native.constructor as new (...a: unknown[]) => object;
  // The same addon object better-sqlite3 holds: require caches a .node module by its path.
  const addonPath = join(nodeModules, "better-sqlite3", "build", "Release", "better_sqlite3.node");
  const addon = createRequire(import.meta.url)(addonPath) as { Database: unknown };
  if (addon.Database !== NativeDb) throw new Error(`better-sqlite3 loaded its addon from somewhere else than ${addonPath}`);
  const proto = NativeDb.prototype as Record<string, (...a: unknown[]) => unknown>;

  const refuse = (what: string): never => {
    throw new Error(`Not allowed in the grader's sandbox: ${what}. Use only the database you were given.`);
  };
  const checkSql = (sql: unknown) => {
    const why = typeof sql === "string" ? forbiddenSql(sql) : null;
    if (why) refuse(why);
  };
  const wrap = (name: string, before: (args: unknown[]) => void) => {
    const orig = proto[name];
    if (typeof orig !== "function") return;
    Object.defineProperty(proto, name, {
      value: function (this: object, ...args: unknown[]) {
        before(args);
        return Reflect.apply(orig, this, args);
      },
      writable: false,
      configurable: false,
    });
  };
  wrap("prepare", (a) => checkSql(a[0]));
  wrap("exec", (a) => checkSql(a[0]));
  wrap("loadExtension", () => refuse("loading SQLite extensions"));
  wrap("backup", (a) => {
    if (typeof a[1] !== "string" || !allowed(a[1])) refuse("a backup outside your folder");
  });

  // Every database opens through this constructor, whatever route the JS took.
  const Guarded = function (this: unknown, ...args: unknown[]) {
    const filename = String(args[0] ?? "");
    const given = String(args[1] ?? "");
    const anonymous = args[2] === true;
    if (!anonymous) {
      if (filename.startsWith("file:") || given.startsWith("file:")) refuse("SQLite URI file names");
      if (!allowed(filename)) refuse(`a database outside your folder (${filename})`);
    }
    return Reflect.construct(NativeDb, args, new.target ?? NativeDb);
  } as unknown as { prototype: object };
  Guarded.prototype = NativeDb.prototype;
  Object.defineProperty(addon, "Database", { value: Guarded, writable: false, configurable: false });
}

/** After the addons the host needs are loaded, no other native code may load. */
export async function lockAddons(): Promise<void> {
  const deny = () => {
    throw new Error("Not allowed in the grader's sandbox: loading native addons.");
  };
  Object.defineProperty(process, "dlopen", { value: deny, writable: false, configurable: false });
  const Module = (await import("node:module")).default as unknown as { _extensions?: Record<string, unknown> };
  if (Module._extensions) Object.defineProperty(Module._extensions, ".node", { value: deny, writable: false, configurable: false });
}

/**
 * Signals only to this process. Under bubblewrap the host has its own PID namespace and sees
 * no other process; with the permission model alone, `process.kill` could reach the grading
 * process, or another student's, so it is closed here (and `_kill`, which it calls).
 */
export function lockSignals(): void {
  const self = process.pid;
  // process.kill looks up process._kill at each call, so guarding _kill guards both.
  const raw = (process as unknown as { _kill: (pid: number, sig: number) => number })._kill;
  const EPERM = -1;
  const guarded = (pid: number, sig: number) => (Number(pid) === self ? raw.call(process, pid, sig) : EPERM);
  Object.defineProperty(process, "_kill", { value: guarded, writable: false, configurable: false });
  const kill = process.kill;
  Object.defineProperty(process, "kill", { value: kill, writable: false, configurable: false });
}
