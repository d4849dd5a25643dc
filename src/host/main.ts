/**
 * The submission host: a process that loads the learner's module, and nothing else of the lab,
 * and runs the calls its grader sends. It runs sandboxed (bubblewrap and/or Node's permission
 * model, see src/grading/sandbox.ts) and it is untrusted: the learner's code shares it.
 *
 * Channels (set up by the grader that spawned it):
 *   fd 3  host → grader: every message, written synchronously, so order is exact and nothing
 *         sent before a SIGKILL is lost;
 *   fd 4  grader → host: calls, replies and settlements, read asynchronously;
 *   fd 5  grader → host: the replies to synchronous calls, read blocking.
 * When fd 4 ends, the grader is gone, and so is the host.
 */
import { createReadStream, readSync, writeSync } from "node:fs";
import { StringDecoder } from "node:string_decoder";
import { pathToFileURL } from "node:url";
import { buildCap, type CapContext } from "./caps.ts";
import { guardSqlite, lockAddons, lockSignals } from "./guards.ts";
import { pendingTimers, watchTimers } from "./timers.ts";
import { LineReader, Peer, type Msg, type Target } from "./wire.ts";

interface HostConfig {
  /** The compiled submission (one ESM file). */
  bundle: string;
  /** The host's own writable folder. */
  dir: string;
  /** Writable folders shared with the grading's other hosts. */
  shared: string[];
  /** Native libraries to load (and guard) before addons are locked. */
  preload: string[];
  /** The lab's node_modules (read-only). */
  nodeModules: string;
  /** Wait for the grader's "load" before importing the bundle (it is being compiled meanwhile). */
  deferLoad?: boolean;
}

const OUT = 3;
const IN = 4;
const SYNC_IN = 5;

const config = JSON.parse(process.argv[2] ?? "null") as HostConfig | null;
if (!config) {
  process.stderr.write("msglab's submission host must be started by a grader.\n");
  process.exit(2);
}

// Taken before the learner's code loads, so a patched global cannot garble the channel.
const stringify = JSON.stringify;
const parse = JSON.parse;
const realExit = (process as unknown as { reallyExit(code: number): never }).reallyExit.bind(process);

function writeAll(fd: number, text: string): void {
  const buf = Buffer.from(text, "utf8");
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
    }
  }
}

const syncBuf = Buffer.alloc(1 << 16);
let syncPending = "";
// A read can end inside a multi-byte character: the decoder carries its bytes to the next read.
const syncDecoder = new StringDecoder("utf8");
function readLineSync(): string {
  for (;;) {
    const nl = syncPending.indexOf("\n");
    if (nl >= 0) {
      const line = syncPending.slice(0, nl);
      syncPending = syncPending.slice(nl + 1);
      return line;
    }
    let n: number;
    try {
      n = readSync(SYNC_IN, syncBuf, 0, syncBuf.length, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EAGAIN") continue;
      throw e;
    }
    if (n === 0) {
      // The grader went away while this call waited for it.
      realExit(0);
    }
    syncPending += syncDecoder.write(syncBuf.subarray(0, n));
  }
}

let dead = false;
function post(msg: Msg): void {
  if (dead) return;
  try {
    writeAll(OUT, stringify(msg) + "\n");
  } catch {
    // The grader is gone; there is nobody to run for.
    dead = true;
    realExit(0);
  }
}

const ctx: CapContext = { dir: config.dir, writable: [config.dir, ...config.shared], closers: [] };
let mod: Record<string, unknown> = {};

const peer = new Peer(
  {
    send: post,
    sendSync(msg) {
      post(msg);
      return parse(readLineSync()) as Msg;
    },
  },
  (to: Target, args: unknown[]) => {
    if ("export" in to) {
      const fn = mod[to.export];
      if (typeof fn !== "function") throw new TypeError(`\`${to.export}\` is not an exported function of your module`);
      return Reflect.apply(fn as (...a: unknown[]) => unknown, undefined, args);
    }
    if ("cap" in to) return buildCap(to.cap, args[0], ctx);
    if ("builtin" in to) {
      if (to.builtin === "memory") return process.memoryUsage();
      // A few turns of the host's event loop: what the learner's code does "right after" has
      // been done, and said, by the time this answers.
      if (to.builtin === "turns") {
        let p = Promise.resolve();
        for (let i = 0; i < Number(args[0] ?? 5); i++) p = p.then(() => new Promise<void>((r) => setImmediate(r)));
        return p;
      }
      if (to.builtin === "get") return mod[String(args[0])];
      if (to.builtin === "timers") return pendingTimers();
    }
    throw new Error("unknown call target");
  },
  2,
);

// process.exit would end the host silently; say who did it, then exit as asked.
const exitWith = (code?: unknown) => {
  const n = typeof code === "number" ? code : Number(code ?? 0) || 0;
  post({ t: "exit-called", code: n });
  realExit(n);
};
process.exit = exitWith as typeof process.exit;

// An error thrown in a callback outside any awaited promise would kill the host; the grader
// charges it to the running check instead.
const escaped = (e: unknown) => {
  try {
    post({ t: "escaped", error: peer.encode(e) });
  } catch {
    post({ t: "escaped", error: String(e) });
  }
};
process.on("uncaughtException", escaped);
process.on("unhandledRejection", escaped);

for (const lib of config.preload) {
  if (lib === "better-sqlite3") await guardSqlite([config.dir, ...config.shared], config.nodeModules);
  // The same module instances the submission's imports get (both resolve to the same files).
  if (lib === "amqplib") await import("amqplib");
  if (lib === "kafkajs") await import("kafkajs");
  // Native: it must load before addons are locked. ZeroMQ under bubblewrap talks over ipc://
  // sockets in the shared folder (there is no network).
  if (lib === "zeromq") await import("zeromq");
}
await lockAddons();
lockSignals();

const input = createReadStream("", { fd: IN, highWaterMark: 1 << 16 });
let loadNow: () => void = () => {};
const loadSignal = new Promise<void>((resolve) => (loadNow = resolve));
const lines = new LineReader((line) => {
  const msg = parse(line) as Msg;
  if (msg.t === "load") loadNow();
  else peer.receive(msg);
});
input.on("data", (chunk) => lines.push(chunk as Buffer));
// The grader closed its end: it finished, or it died. Either way the host's run is over.
input.on("end", () => realExit(0));
input.on("error", () => realExit(0));

// Started ahead (Node, the host runtime and the libraries loaded) while the grader compiles.
if (config.deferLoad) await loadSignal;
// Last before the learner's module: only its timers (and its libraries') are recorded.
watchTimers();
try {
  mod = (await import(pathToFileURL(config.bundle).href)) as Record<string, unknown>;
} catch (e) {
  post({ t: "load-failed", error: peer.encode(e) });
  realExit(1);
}
const exportsInfo: Record<string, string> = {};
for (const [k, v] of Object.entries(mod)) exportsInfo[k] = typeof v === "function" && /^class\b/.test(Function.prototype.toString.call(v)) ? "class" : typeof v;
post({ t: "ready", exports: exportsInfo });
