import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import { join } from "node:path";
import { LAB_ROOT } from "../paths.ts";
import { CheckFailure, LabError } from "./fail.ts";

/** What a worker tells the grader: a checkpoint it is blocked at, or a plain report. */
export interface WorkerEvent {
  type: "checkpoint" | "report" | "ready" | "error";
  name: string;
  data: unknown;
  /** For checkpoints: the id the grader's answer refers to. */
  id?: number;
}

/** "hold" leaves the worker blocked until `resume()` or `kill()`: time for the grader to look around. */
export type CheckpointDecision = "continue" | "kill" | "hold";

export interface WorkerOptions {
  /** JSON given to the worker's main (queue names, db path, ...). */
  input: unknown;
  /**
   * Called at each checkpoint while the worker waits. "kill" SIGKILLs it right there, so the
   * crash lands at an exact point, e.g. after message k's effect commits and before its ack.
   */
  onCheckpoint?: (event: WorkerEvent, worker: Worker) => CheckpointDecision;
  /** Called for every report. */
  onReport?: (event: WorkerEvent, worker: Worker) => void;
}

const TSX = createRequire(import.meta.url).resolve("tsx");
const HOOKS = join(LAB_ROOT, "src", "grading", "register-hooks.mjs");

/** One running worker process. */
export class Worker {
  readonly events: WorkerEvent[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private output = "";
  private waiters: { match: (e: WorkerEvent) => boolean; resolve: (e: WorkerEvent) => void }[] = [];
  killed = false;
  private held: number[] = [];

  constructor(
    private readonly child: ChildProcess,
    private readonly opts: WorkerOptions,
  ) {
    const keep = (d: Buffer) => (this.output = (this.output + d.toString()).slice(-4000));
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    this.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    child.on("message", (raw) => this.onMessage(raw as WorkerEvent));
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The tail of what the worker printed: the learner's logs and stack traces. */
  get log(): string {
    return this.output;
  }

  private onMessage(e: WorkerEvent): void {
    this.events.push(e);
    this.waiters = this.waiters.filter((w) => {
      if (!w.match(e)) return true;
      w.resolve(e);
      return false;
    });
    if (e.type === "checkpoint") {
      const decision = this.opts.onCheckpoint?.(e, this) ?? "continue";
      if (decision === "kill") this.kill();
      else if (decision === "hold") this.held.push(e.id!);
      else this.child.send({ type: "go", id: e.id });
    } else if (e.type === "report") this.opts.onReport?.(e, this);
  }

  /** Resolves with the first event (past or future) that matches. */
  waitFor(match: (e: WorkerEvent) => boolean, timeoutMs: number, what: string): Promise<WorkerEvent> {
    const past = this.events.find(match);
    if (past) return Promise.resolve(past);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new CheckFailure(`${what} did not happen within ${timeoutMs} ms.${this.tail()}`)), timeoutMs);
      const exitWatch = this.exited.then(({ code, signal }) => {
        if (!this.killed) reject(new CheckFailure(`Your code's process ended (${signal ?? `exit code ${code}`}) before ${what}.${this.tail()}`));
      });
      void exitWatch;
      this.waiters.push({
        match,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  }

  private tail(): string {
    const t = this.output.trim().split("\n").slice(-5).join("\n");
    return t ? ` Its last output:\n${t}` : "";
  }

  /** Lets every held checkpoint go on. */
  resume(): void {
    for (const id of this.held.splice(0)) this.child.send({ type: "go", id });
  }

  /** SIGKILL: no finally blocks, no graceful close, exactly what a crash is. */
  kill(): void {
    this.killed = true;
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }

  /** Asks the worker to shut down cleanly (its stop() runs), then kills it if it lingers. */
  async stop(timeoutMs = 3000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.send({ type: "stop" });
    const timer = setTimeout(() => this.kill(), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/**
 * Runs the learner's code in processes of its own, started from a grader-owned entry that
 * imports the learner's module and injects the dependencies (see worker.ts). The grader learns
 * over IPC what the code is doing and can SIGKILL it at a chosen point, then start it again.
 * Every worker is reaped at the end of the check, on a timeout too.
 */
export class CrashHarness {
  private readonly workers: Worker[] = [];
  constructor(private readonly submissionPath: string) {}

  async start(entry: string, opts: WorkerOptions): Promise<Worker> {
    const child = spawn(process.execPath, ["--import", TSX, "--import", HOOKS, entry], {
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      env: {
        ...process.env,
        MSGLAB_CHILD: "0",
        MSGLAB_WORKER_SUBMISSION: this.submissionPath,
        MSGLAB_WORKER_INPUT: JSON.stringify(opts.input ?? null),
      },
    });
    const worker = new Worker(child, opts);
    this.workers.push(worker);
    const ready = await Promise.race([
      worker.waitFor((e) => e.type === "ready" || e.type === "error", 15_000, "the worker's start"),
      worker.exited.then(() => null),
    ]);
    if (!ready) throw new CheckFailure(`Your code's process ended while starting.${worker.log ? ` Its last output:\n${worker.log.trim().split("\n").slice(-5).join("\n")}` : ""}`);
    if (ready.type === "error") throw new LabError(String(ready.data));
    return worker;
  }

  async killAll(): Promise<void> {
    for (const w of this.workers) w.kill();
    await Promise.all(this.workers.map((w) => w.exited));
  }
}
