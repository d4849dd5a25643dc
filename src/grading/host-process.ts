/**
 * The trusted side of one submission host: spawns it in its sandbox, speaks the RPC, watches
 * its memory and output, and kills it. Everything the host says is treated as what the
 * learner's code did; nothing it says is a verdict.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { LineReader, Peer, type Msg, type Target } from "../host/wire.ts";
import { processTree } from "./proc-tree.ts";
import { hostCommand, type SandboxMode } from "./sandbox.ts";

export interface HostSpec {
  /** The compiled submission (one ESM file, read-only to the host). */
  bundle: string;
  /** The host runtime bundle (src/host/main.ts, compiled). */
  hostMain: string;
  /** Read-only paths: node_modules first, then the host bundle's folder and the submission's folder. */
  read: string[];
  labRoot: string;
  /** A fresh folder for this host; it may write here, and in `shared`. */
  dir: string;
  /** Folders shared by every host of the grading (each check gets a subfolder: `t.sharedDir`). */
  shared: string[];
  network: boolean;
  preload: string[];
  memoryMb: number;
  /** Output beyond this many bytes kills the host. */
  outputLimit: number;
  /** Start now, load the bundle only on `load()` (it is still being compiled). */
  deferLoad?: boolean;
  mode: SandboxMode;
}

/** Why a host ended, in words a learner can act on. */
export type HostEnd =
  | { kind: "killed" }
  | { kind: "exit"; code: number | null; signal: NodeJS.Signals | null; exitCalled: number | null }
  | { kind: "memory"; rssMb: number }
  | { kind: "output"; bytes: number }
  | { kind: "load-failed"; error: unknown };

/** Rejects every call still waiting when the host goes away; `end` says how. */
export class HostGone extends Error {
  override name = "HostGone";
  constructor(
    message: string,
    readonly end: HostEnd,
  ) {
    super(message);
  }
}

const TAIL_BYTES = 6000;
const WATCH_MS = 50;

/** Every process under `pid`, deepest first (Linux; elsewhere the host has no children). */
function descendants(pid: number): number[] {
  return (processTree(pid) ?? []).slice(1).reverse();
}

/** The resident memory of `pid` and everything under it. */
function rssKb(pid: number): number {
  let total = 0;
  for (const p of processTree(pid) ?? []) {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, "utf8"));
      if (m) total += Number(m[1]);
    } catch {
      // Gone meanwhile.
    }
  }
  return total;
}

export class HostProcess {
  readonly peer: Peer;
  private toHost!: Writable;
  readonly ready: Promise<Record<string, string>>;
  readonly exited: Promise<HostEnd>;
  private readonly child: ChildProcess;
  private output = "";
  private outputBytes = 0;
  private exitCalled: number | null = null;
  private endReason: HostEnd | null = null;
  private killedOnPurpose = false;
  private watchdog: NodeJS.Timeout | undefined;
  private readonly escapedErrors: unknown[] = [];
  private onEscaped: ((e: unknown) => void) | null = null;
  /** Serves the host's synchronous calls one at a time, in order. */
  private syncChain: Promise<void> = Promise.resolve();

  constructor(
    readonly spec: HostSpec,
    serve: ((to: Target, args: unknown[]) => unknown) | null = null,
  ) {
    mkdirSync(spec.dir, { recursive: true });
    const env: Record<string, string> = { HOME: spec.dir, PATH: "/usr/bin:/bin", KAFKAJS_NO_PARTITIONER_WARNING: "1", LANG: "C.UTF-8" };
    // Mutation testing (`npm run mutation`) picks the active mutant through this one variable.
    if (process.env.__STRYKER_ACTIVE_MUTANT__) env.__STRYKER_ACTIVE_MUTANT__ = process.env.__STRYKER_ACTIVE_MUTANT__;
    const config = JSON.stringify({ bundle: spec.bundle, dir: spec.dir, shared: spec.shared, preload: spec.preload, nodeModules: spec.read[0], deferLoad: spec.deferLoad === true });
    const { file, args } = hostCommand(
      spec.mode,
      { dir: spec.dir, shared: spec.shared, read: spec.read, labRoot: spec.labRoot, network: spec.network, memoryMb: spec.memoryMb, env },
      [spec.hostMain, config],
    );
    this.child = spawn(file, args, {
      cwd: spec.dir,
      env,
      // fd 3: host → grader; fd 4: grader → host; fd 5: replies to the host's synchronous calls.
      stdio: ["ignore", "pipe", "pipe", "pipe", "pipe", "pipe"],
    });
    const stdio = this.child.stdio as unknown as (Readable | Writable)[];
    const toHost = stdio[4] as Writable;
    this.toHost = toHost;
    const syncOut = stdio[5] as Writable;
    toHost.on("error", () => {});
    syncOut.on("error", () => {});
    // Nothing more reaches a host once it is being killed: not even a reply it is blocked on.
    this.peer = new Peer({ send: (m) => void (this.alive && toHost.write(JSON.stringify(m) + "\n")) }, serve, 1);

    let readyResolve!: (e: Record<string, string>) => void;
    let readyReject!: (e: unknown) => void;
    this.ready = new Promise((res, rej) => {
      readyResolve = res;
      readyReject = rej;
    });
    this.ready.catch(() => {});

    const keep = (d: Buffer) => {
      this.outputBytes += d.length;
      this.output = (this.output + d.toString()).slice(-TAIL_BYTES);
      if (this.outputBytes > spec.outputLimit && !this.endReason) this.end({ kind: "output", bytes: this.outputBytes });
    };
    this.child.stdout!.on("data", keep);
    this.child.stderr!.on("data", keep);

    const lines = new LineReader((line) => {
      let msg: Msg;
      try {
        msg = JSON.parse(line) as Msg;
      } catch {
        // Not ours: the learner's code wrote on the channel. Say so, and stop trusting it.
        this.escape(new Error("your code wrote to the grader's channel (file descriptor 3)"));
        return;
      }
      this.onMessage(msg, readyResolve, readyReject, syncOut);
    }, 16 * 1024 * 1024, () => {
      this.escape(new Error("your code wrote more than 16 MiB without a line break to the grader's channel (file descriptor 3)"));
      this.signal();
    });
    (stdio[3] as Readable).on("data", (d: Buffer) => lines.push(d));

    this.exited = new Promise((resolve) => {
      this.child.once("close", (code, signal) => {
        clearInterval(this.watchdog);
        const end: HostEnd = this.endReason ?? (this.killedOnPurpose ? { kind: "killed" } : { kind: "exit", code, signal, exitCalled: this.exitCalled });
        this.endReason = end;
        const gone = new HostGone(describeEnd(end, this.tail()), end);
        readyReject(gone);
        this.peer.close(gone);
        resolve(end);
      });
    });
    this.child.once("error", () => {});
    this.watchdog = setInterval(() => {
      const kb = rssKb(this.child.pid ?? -1);
      if (kb > spec.memoryMb * 1024) this.end({ kind: "memory", rssMb: Math.round(kb / 1024) });
    }, WATCH_MS);
    this.watchdog.unref();
  }

  private onMessage(msg: Msg, ready: (e: Record<string, string>) => void, failed: (e: unknown) => void, syncOut: Writable): void {
    switch (msg.t) {
      case "ready":
        ready(msg.exports);
        return;
      case "load-failed": {
        const error = this.peer.decode(msg.error);
        this.endReason ??= { kind: "load-failed", error };
        failed(new HostGone("load failed", this.endReason));
        return;
      }
      case "exit-called":
        this.exitCalled = msg.code;
        return;
      case "escaped":
        this.escape(this.peer.decode(msg.error));
        return;
      case "call":
        if (msg.sync) {
          this.syncChain = this.syncChain.then(() =>
            this.peer.serve(msg, (reply) => {
              // A grader that killed the host inside this call must not let it run on.
              if (this.alive) syncOut.write(JSON.stringify(reply) + "\n");
            }),
          );
          return;
        }
        this.peer.receive(msg);
        return;
      default:
        this.peer.receive(msg);
    }
  }

  private escape(e: unknown): void {
    if (this.escapedErrors.length >= 50) return;
    this.escapedErrors.push(e);
    this.onEscaped?.(e);
  }

  /** Errors that escaped the learner's code (uncaught), oldest first. */
  get escaped(): unknown[] {
    return this.escapedErrors;
  }

  set escapedListener(fn: ((e: unknown) => void) | null) {
    this.onEscaped = fn;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** False from the moment it is being killed, not only once it has exited. */
  get alive(): boolean {
    return !this.killedOnPurpose && this.endReason === null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The tail of what the learner's code printed. */
  tail(lines = 8): string {
    return this.output.trim().split("\n").slice(-lines).join("\n");
  }

  private end(reason: HostEnd): void {
    this.endReason ??= reason;
    this.signal();
  }

  /**
   * SIGKILL to the host and everything under it at once. Under bubblewrap the learner's Node is
   * a grandchild that would otherwise die only a moment after bwrap (with its parent): the
   * crash must land where the grader decided, not a few instructions later.
   */
  private signal(): void {
    for (const pid of descendants(this.child.pid ?? -1)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }

  /** SIGKILL, on purpose: no finally block, no graceful close, exactly what a crash is. */
  kill(): Promise<HostEnd> {
    if (this.alive) {
      this.killedOnPurpose = true;
      this.signal();
    }
    return this.exited;
  }

  /** For a host started with `deferLoad`: the bundle is written, load it. */
  load(): void {
    if (this.alive) this.toHost.write(JSON.stringify({ t: "load" }) + "\n");
  }

  call(to: Target, args: unknown[]): Promise<unknown> {
    return this.peer.call(to, args);
  }
}

export function describeEnd(end: HostEnd, tail: string): string {
  const out = tail ? ` Its last output:\n${tail}` : "";
  switch (end.kind) {
    case "killed":
      return "The grader stopped your code's process.";
    case "memory":
      return `Your code's process used ${end.rssMb} MiB of memory, over the sandbox's limit, and was stopped. Look for data that grows without bound.`;
    case "output":
      return `Your code's process printed more than ${Math.round(end.bytes / 1024)} KiB and was stopped. Print less (a log line per message is usually too much).`;
    case "load-failed":
      return "Your file failed to load.";
    case "exit":
      if (end.exitCalled !== null) return `Your code called process.exit(${end.exitCalled}), which ended its process. Return or throw instead.${out}`;
      return `Your code's process ended by itself (${end.signal ?? `exit code ${end.code}`}).${out}`;
  }
}
