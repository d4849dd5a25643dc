/**
 * Crash images of a SQLite database in WAL mode: the database as a process killed right after a
 * given commit leaves it, whatever that process (or any other connection) wrote afterwards.
 *
 * How: a `WalPin` checkpoints the database completely, then holds a read transaction open on a
 * connection of the grader's. While it is open SQLite can neither copy a frame into the database
 * file (the pin reads the file itself, so a checkpoint may not change it) nor restart the WAL
 * (a reader is using it): every transaction any connection commits is appended to the WAL, in
 * commit order, and stays there. The database file plus the WAL cut right after one commit frame
 * is then exactly the database at that commit: SQLite's recovery, run when the image is opened,
 * keeps the transactions whose commit frame is in the cut and nothing after. Which table, which
 * connection, which process wrote does not matter: everything that reaches this database file
 * goes through that one WAL.
 *
 * Nothing here can see a write that went to another file: a grader that cuts at a commit must
 * make sure the process kept its state in this database only.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, type Dirent } from "node:fs";
import { basename, dirname, join } from "node:path";
import Database from "better-sqlite3";
import { LabError } from "./fail.ts";

const WAL_HEADER = 32;
const FRAME_HEADER = 24;
const WAL_MAGIC_LE = 0x377f0682;
const WAL_MAGIC_BE = 0x377f0683;
const WAL_VERSION = 3007000;

/** The WAL file of a database file. */
export function walPathOf(dbPath: string): string {
  return `${dbPath}-wal`;
}

/** SQLite's WAL checksum over `buf[start, end)`, continuing from `s` (wal.c, walChecksumBytes). */
function walChecksum(buf: Buffer, start: number, end: number, bigEndian: boolean, s: readonly [number, number]): [number, number] {
  let [s1, s2] = s;
  for (let i = start; i < end; i += 8) {
    const x0 = bigEndian ? buf.readUInt32BE(i) : buf.readUInt32LE(i);
    const x1 = bigEndian ? buf.readUInt32BE(i + 4) : buf.readUInt32LE(i + 4);
    s1 = (s1 + x0 + s2) >>> 0;
    s2 = (s2 + x1 + s1) >>> 0;
  }
  return [s1, s2];
}

/**
 * The byte offsets right after each commit frame of a WAL, in order: the places where a cut
 * leaves whole transactions. Read as SQLite's recovery reads it: a valid header, then frames
 * with the header's salts and an unbroken running checksum; the first frame that fails either
 * (a torn write, a leftover of an earlier WAL generation) ends the log.
 */
export function walCommitEnds(wal: Buffer): number[] {
  if (wal.length < WAL_HEADER) return [];
  const magic = wal.readUInt32BE(0);
  if (magic !== WAL_MAGIC_LE && magic !== WAL_MAGIC_BE) return [];
  const bigEndian = magic === WAL_MAGIC_BE;
  if (wal.readUInt32BE(4) !== WAL_VERSION) return [];
  const pageSize = wal.readUInt32BE(8);
  if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) return [];
  let sum = walChecksum(wal, 0, 24, bigEndian, [0, 0]);
  if (sum[0] !== wal.readUInt32BE(24) || sum[1] !== wal.readUInt32BE(28)) return [];
  const salt1 = wal.readUInt32BE(16);
  const salt2 = wal.readUInt32BE(20);
  const frame = FRAME_HEADER + pageSize;
  const ends: number[] = [];
  for (let at = WAL_HEADER; at + frame <= wal.length; at += frame) {
    if (wal.readUInt32BE(at + 8) !== salt1 || wal.readUInt32BE(at + 12) !== salt2) break;
    if (wal.readUInt32BE(at) === 0) break; // page number 0: not a frame
    sum = walChecksum(wal, at, at + 8, bigEndian, sum);
    sum = walChecksum(wal, at + FRAME_HEADER, at + frame, bigEndian, sum);
    if (sum[0] !== wal.readUInt32BE(at + 16) || sum[1] !== wal.readUInt32BE(at + 20)) break;
    // A commit frame carries the database size in pages after the commit; other frames carry 0.
    if (wal.readUInt32BE(at + 4) !== 0) ends.push(at + frame);
  }
  return ends;
}

/** The commit ends of a database's WAL file as it is now on disk (none without one). */
export function walCommitEndsOf(dbPath: string): number[] {
  const wal = walPathOf(dbPath);
  return existsSync(wal) ? walCommitEnds(readFileSync(wal)) : [];
}

/**
 * Keeps every commit to a WAL database in its WAL, in order, for as long as it is open (see the
 * file's comment). Pin a database before anyone writes to it that you may want to cut, on a
 * database nobody else is reading or writing at that moment.
 */
export class WalPin {
  private constructor(
    readonly dbPath: string,
    private readonly db: Database.Database,
  ) {}

  /** Checkpoints `dbPath` completely (its WAL emptied), then begins the read transaction that pins it. */
  static pin(dbPath: string): WalPin {
    // A checkpoint that waits on another connection means someone else is using it: say so soon.
    const db = new Database(dbPath, { timeout: 500 });
    try {
      if (String(db.pragma("journal_mode", { simple: true })).toLowerCase() !== "wal") throw new LabError(`grader bug: ${dbPath} is not in WAL mode, so it has no WAL to cut`);
      const [res] = db.pragma("wal_checkpoint(TRUNCATE)") as { busy: number; log: number; checkpointed: number }[];
      if (!res || res.busy !== 0 || res.log !== 0) throw new LabError(`grader bug: ${dbPath} could not be checkpointed before pinning (busy ${res?.busy}, ${res?.log} WAL frames left): another connection is using it`);
      db.exec("BEGIN");
      db.prepare("SELECT count(*) FROM sqlite_master").get();
    } catch (e) {
      db.close();
      throw e;
    }
    return new WalPin(dbPath, db);
  }

  /** The WAL's size on disk right now: every commit from here on ends past it. */
  walSize(): number {
    const wal = walPathOf(this.dbPath);
    return existsSync(wal) ? statSync(wal).size : 0;
  }

  /** Ends the read transaction: checkpoints may copy the WAL into the database file again. */
  close(): void {
    if (this.db.open) this.db.close();
  }
}

/**
 * Writes at `imagePath` the database a crash leaves: `dbPath`'s file plus its WAL cut at
 * `walBytes` (all of it when absent), recovered by SQLite and checkpointed into a plain database
 * file (still in WAL mode, with no WAL). `imagePath` is overwritten; its folder is made.
 */
export function writeCrashImage(dbPath: string, imagePath: string, walBytes?: number): void {
  mkdirSync(dirname(imagePath), { recursive: true });
  for (const suffix of ["", "-wal", "-shm"]) rmSync(`${imagePath}${suffix}`, { force: true });
  copyFileSync(dbPath, imagePath);
  const wal = walPathOf(dbPath);
  const bytes = existsSync(wal) ? readFileSync(wal) : Buffer.alloc(0);
  writeFileSync(walPathOf(imagePath), walBytes === undefined ? bytes : bytes.subarray(0, walBytes));
  const db = new Database(imagePath);
  try {
    db.pragma("wal_checkpoint(TRUNCATE)");
  } finally {
    db.close();
  }
}

/**
 * The end of the first commit frame past byte `after` of `dbPath`'s WAL at which the database
 * satisfies `holds` (asked on a read-only image cut there), or undefined when none does. Images
 * are built in `scratchDir` and removed.
 */
export function firstCommitWhere(dbPath: string, opts: { after: number; scratchDir: string; holds: (db: Database.Database) => boolean }): number | undefined {
  const image = join(opts.scratchDir, `cut-${basename(dbPath)}`);
  try {
    for (const end of walCommitEndsOf(dbPath)) {
      if (end <= opts.after) continue;
      writeCrashImage(dbPath, image, end);
      const db = new Database(image, { readonly: true });
      try {
        if (opts.holds(db)) return end;
      } finally {
        db.close();
      }
    }
    return undefined;
  } finally {
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${image}${suffix}`, { force: true });
  }
}

/**
 * What processes left in the grading's shared folder that `expected` does not account for: state
 * kept outside the database a grader cuts (a second database, a plain file), which no crash image
 * covers. Every host of a grading may write all of that folder (`dirname(t.sharedDir)`: every
 * check's folder is in it, and the gateway's sockets), so all of it is looked at. `expected` is
 * asked about each file and folder by its path relative to the shared root ("c3/ledger.db"); the
 * gateway's sockets and the checks' folders themselves are expected. Paths come back relative to
 * `sharedDir`, the check's own first ("dedup.db", "../c4/x.db", "../x").
 */
export function sharedLeftovers(sharedDir: string, expected: (rel: string, entry: Dirent) => boolean): string[] {
  const root = dirname(sharedDir);
  const own = basename(sharedDir);
  const out: string[] = [];
  const list = (dir: string): Dirent[] => {
    try {
      return readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      if ((e as { code?: string }).code === "ENOENT") return []; // a check that just ended took it
      throw e;
    }
  };
  const walk = (dir: string, rel: string) => {
    for (const e of list(dir)) {
      const path = rel ? `${rel}/${e.name}` : e.name;
      const top = rel === "";
      if (top && /^gw\d+\.sock$/.test(e.name) && e.isSocket()) continue;
      const checkFolder = top && /^c\d+$/.test(e.name) && e.isDirectory();
      if (!checkFolder && !expected(path, e)) {
        out.push(path);
        continue;
      }
      if (e.isDirectory()) walk(join(dir, e.name), path);
    }
  };
  walk(root, "");
  const relative = (p: string) => (p.startsWith(`${own}/`) ? p.slice(own.length + 1) : `../${p}`);
  return out.map(relative).sort((a, b) => Number(a.startsWith("../")) - Number(b.startsWith("../")) || a.localeCompare(b));
}
