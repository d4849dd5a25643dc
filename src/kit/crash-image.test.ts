import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { WalPin, firstCommitWhere, sharedLeftovers, walCommitEnds, walCommitEndsOf, walPathOf, writeCrashImage } from "./crash-image.ts";

let dir: string;
let dbPath: string;
const open: Database.Database[] = [];
const pins: WalPin[] = [];

function connect(path = dbPath): Database.Database {
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  open.push(db);
  return db;
}

function pin(path = dbPath): WalPin {
  const p = WalPin.pin(path);
  pins.push(p);
  return p;
}

/** The tags in an image's table t, in order. */
function tags(path: string): string[] {
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare("SELECT tag FROM t ORDER BY rowid").all() as { tag: string }[]).map((r) => r.tag);
  } finally {
    db.close();
  }
}

/**
 * A pinned database with five transactions after the pin: "a" and "b" (two connections), a
 * big one ("c1".."c3", several pages, so several frames before its commit frame), "d" into a
 * table made after the pin, and "e".
 */
function fiveCommits(): { ends: number[]; pageSize: number; writer: Database.Database } {
  const setup = connect();
  setup.exec("CREATE TABLE t (tag TEXT, pad BLOB)");
  pin();
  const writer = connect();
  const other = connect();
  const ins = (db: Database.Database, tag: string, bytes = 10) => db.prepare("INSERT INTO t VALUES (?, ?)").run(tag, Buffer.alloc(bytes, 7));
  ins(writer, "a");
  ins(other, "b");
  writer.transaction(() => {
    for (const tag of ["c1", "c2", "c3"]) ins(writer, tag, 9000);
  })();
  other.exec("CREATE TABLE late (x)");
  other.transaction(() => {
    other.prepare("INSERT INTO late VALUES (1)").run();
    ins(other, "d");
  })();
  ins(writer, "e");
  const pageSize = writer.pragma("page_size", { simple: true }) as number;
  return { ends: walCommitEndsOf(dbPath), pageSize, writer };
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "crash-image-"));
  dbPath = join(dir, "x.db");
});

afterEach(() => {
  for (const p of pins.splice(0)) p.close();
  for (const db of open.splice(0)) db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("crash images", () => {
  it("a cut right after each commit keeps exactly the transactions up to it, from every connection and table", () => {
    const { ends } = fiveCommits();
    // The CREATE TABLE late is a commit too: six after the pin.
    expect(ends).toHaveLength(6);
    const expected = [["a"], ["a", "b"], ["a", "b", "c1", "c2", "c3"], ["a", "b", "c1", "c2", "c3"], ["a", "b", "c1", "c2", "c3", "d"], ["a", "b", "c1", "c2", "c3", "d", "e"]];
    ends.forEach((end, i) => {
      const image = join(dir, `image-${i}.db`);
      writeCrashImage(dbPath, image, end);
      expect(tags(image)).toEqual(expected[i]);
    });
    // The image is a plain file: no WAL left beside it.
    const image = join(dir, "image-full.db");
    writeCrashImage(dbPath, image);
    expect(tags(image)).toEqual(expected[5]);
    // Everything is in the image's database file itself: a copy of it alone holds it all.
    const alone = join(mkdtempSync(join(dir, "alone-")), "x.db");
    copyFileSync(image, alone);
    expect(tags(alone)).toEqual(expected[5]);
  });

  it("a cut inside a transaction drops all of it", () => {
    const { ends, pageSize } = fiveCommits();
    // The big transaction has frames before its commit frame: cut after the first of them.
    const frame = 24 + pageSize;
    expect(ends[2]! - ends[1]!).toBeGreaterThan(frame);
    const image = join(dir, "mid.db");
    writeCrashImage(dbPath, image, ends[1]! + frame);
    expect(tags(image)).toEqual(["a", "b"]);
    writeCrashImage(dbPath, image, ends[2]! - 1);
    expect(tags(image)).toEqual(["a", "b"]);
  });

  it("while pinned, no checkpoint copies a commit out of the WAL nor restarts it", () => {
    const { ends, writer } = fiveCommits();
    writer.pragma("busy_timeout = 0");
    const [res] = writer.pragma("wal_checkpoint(TRUNCATE)") as { busy: number }[];
    expect(res!.busy).toBe(1);
    writer.pragma("wal_checkpoint(PASSIVE)");
    writer.prepare("INSERT INTO t VALUES ('f', NULL)").run();
    const now = walCommitEndsOf(dbPath);
    expect(now.slice(0, ends.length)).toEqual(ends);
    expect(now).toHaveLength(ends.length + 1);
    // The database file itself still holds nothing of them.
    const copy = join(dir, "file-only.db");
    copyFileSync(dbPath, copy);
    expect(tags(copy)).toEqual([]);
  });

  it("reads the WAL as SQLite's recovery does: a torn tail and a broken checksum end it", () => {
    const { ends } = fiveCommits();
    const wal = readFileSync(walPathOf(dbPath));
    // Garbage after the last frame (a torn write): the same commits.
    expect(walCommitEnds(Buffer.concat([wal, Buffer.alloc(5000, 0xab)]))).toEqual(ends);
    expect(walCommitEnds(wal.subarray(0, ends[5]! - 1))).toEqual(ends.slice(0, 5));
    // One byte changed inside the big transaction's first page: the log ends before it ...
    const broken = Buffer.from(wal);
    const at = ends[1]! + 24 + 100;
    broken[at] = broken[at]! ^ 0xff;
    expect(walCommitEnds(broken)).toEqual(ends.slice(0, 2));
    // ... and SQLite agrees: recovering the whole broken WAL keeps the same two transactions.
    const copyDir = mkdtempSync(join(dir, "broken-"));
    const copy = join(copyDir, "x.db");
    copyFileSync(dbPath, copy);
    writeFileSync(walPathOf(copy), broken);
    const image = join(dir, "broken.db");
    writeCrashImage(copy, image);
    expect(tags(image)).toEqual(["a", "b"]);
    // Not a WAL at all.
    expect(walCommitEnds(Buffer.alloc(100))).toEqual([]);
    expect(walCommitEnds(Buffer.alloc(0))).toEqual([]);
  });

  it("finds the first commit at which a row is visible, past a given point", () => {
    const { ends } = fiveCommits();
    const has = (tag: string) => (db: Database.Database) => db.prepare("SELECT 1 FROM t WHERE tag = ?").get(tag) !== undefined;
    const scratchDir = mkdtempSync(join(dir, "scratch-"));
    expect(firstCommitWhere(dbPath, { after: 0, scratchDir, holds: has("b") })).toBe(ends[1]);
    expect(firstCommitWhere(dbPath, { after: 0, scratchDir, holds: has("c2") })).toBe(ends[2]);
    expect(firstCommitWhere(dbPath, { after: ends[2]!, scratchDir, holds: has("c2") })).toBe(ends[3]);
    expect(firstCommitWhere(dbPath, { after: 0, scratchDir, holds: has("zz") })).toBeUndefined();
  });

  it("refuses to pin a database another connection is reading", () => {
    const setup = connect();
    setup.exec("CREATE TABLE t (tag TEXT, pad BLOB)");
    setup.prepare("INSERT INTO t VALUES ('x', NULL)").run();
    const reader = connect();
    reader.exec("BEGIN");
    reader.prepare("SELECT count(*) FROM t").get();
    expect(() => pin()).toThrow(/could not be checkpointed/);
    reader.exec("COMMIT");
    expect(() => pin()).not.toThrow();
  });
});

describe("sharedLeftovers", () => {
  it("names what a process left in the grading's shared folder, the check's own folder first", () => {
    const root = join(dir, "shared");
    const mine = join(root, "c3");
    for (const d of [mine, join(root, "c1"), join(mine, "crash-image")]) mkdirSync(d, { recursive: true });
    for (const f of ["c3/ledger.db", "c3/ledger.db-wal", "c3/crash-image/ledger.db", "c1/ledger.db"]) writeFileSync(join(root, f), "");
    const ledger = (rel: string, e: { isFile(): boolean; isDirectory(): boolean }) => (e.isFile() && /^c\d+\/(crash-image\/)?ledger\.db(-wal|-shm)?$/.test(rel)) || (e.isDirectory() && /^c\d+\/crash-image$/.test(rel));
    expect(sharedLeftovers(mine, ledger)).toEqual([]);
    // Nothing is expected: every ledger file is a leftover, the checks' folders are not.
    expect(sharedLeftovers(mine, () => false)).toEqual(["crash-image", "ledger.db", "ledger.db-wal", "../c1/ledger.db"]);
    for (const f of ["c3/dedup.db", "c3/crash-image/notes.txt", "c1/x.log", "top.db"]) writeFileSync(join(root, f), "");
    mkdirSync(join(root, "c1", "hidden", "deeper"), { recursive: true });
    writeFileSync(join(root, "c1", "hidden", "deeper", "y"), "");
    mkdirSync(join(root, "c9x"));
    expect(sharedLeftovers(mine, ledger)).toEqual(["crash-image/notes.txt", "dedup.db", "../c1/hidden", "../c1/x.log", "../c9x", "../top.db"]);
  });
});
