// Attack: uses SQLite's native file access to write outside its folder (VACUUM INTO, ATTACH, a file: URI, backup), which Node's permission model does not see.
// @expect fail|error
import Database from "better-sqlite3";
import type { Retry } from "msglab/contracts/retry-backoff";

export const retry: Retry = async () => {
  const wrote: string[] = [];
  const attempt = (what: string, f: () => unknown) => {
    try {
      f();
      wrote.push(what);
    } catch {
      // refused
    }
  };
  attempt("memory vacuum", () => new Database(":memory:").exec("VACUUM INTO '/tmp/msglab-hostile-canary'"));
  attempt("attach", () => new Database(":memory:").exec("ATTACH DATABASE '/tmp/msglab-hostile-canary' AS x; CREATE TABLE x.t(a)"));
  attempt("uri", () => new Database("file:/tmp/msglab-hostile-canary?mode=rwc").exec("CREATE TABLE t(a)"));
  attempt("outside", () => new Database("/tmp/msglab-hostile-canary").exec("CREATE TABLE t(a)"));
  attempt("comment vacuum", () => new Database(":memory:").exec("VACUUM/**/INTO '/tmp/msglab-hostile-canary'"));
  attempt("backup", () => new Database(":memory:").backup("/tmp/msglab-hostile-canary"));
  throw new Error(`wrote via: ${wrote.join(", ") || "nothing"}`);
};
