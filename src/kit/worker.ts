/**
 * The worker side of the crash harness: a grader-owned entry calls `runWorker(main)`. It loads
 * the learner's module, hands `main` the submission, the grader's input and two ways to talk:
 * `report` (fire and forget) and `checkpoint` (blocks until the grader says go, or kills it).
 */
import { pathToFileURL } from "node:url";
import type { WorkerEvent } from "./crash.ts";

export interface WorkerContext<S, I> {
  submission: S;
  input: I;
  report(name: string, data?: unknown): void;
  /** Blocks here until the grader decides: the place a SIGKILL can land exactly. */
  checkpoint(name: string, data?: unknown): Promise<void>;
  /** Resolves when the grader asks for a clean shutdown. */
  stopped: Promise<void>;
}

export async function runWorker<S, I>(main: (w: WorkerContext<S, I>) => Promise<void>): Promise<void> {
  const send = (e: WorkerEvent) => process.send?.(e);
  let nextId = 0;
  const waiting = new Map<number, () => void>();
  let onStop: () => void = () => {};
  const stopped = new Promise<void>((resolve) => (onStop = resolve));
  process.on("message", (m: { type: string; id?: number }) => {
    if (m.type === "go" && m.id !== undefined) {
      waiting.get(m.id)?.();
      waiting.delete(m.id);
    }
    if (m.type === "stop") onStop();
  });
  let submission: S;
  try {
    submission = (await import(pathToFileURL(process.env.MSGLAB_WORKER_SUBMISSION!).href)) as S;
  } catch (e) {
    // Exit only once the message is out: IPC sends are asynchronous.
    process.send?.({ type: "error", name: "load", data: `The worker could not load your file: ${(e as Error).message}` }, () => process.exit(1));
    return;
  }
  const ctx: WorkerContext<S, I> = {
    submission,
    input: JSON.parse(process.env.MSGLAB_WORKER_INPUT ?? "null") as I,
    report: (name, data) => send({ type: "report", name, data }),
    checkpoint: (name, data) =>
      new Promise<void>((resolve) => {
        const id = ++nextId;
        waiting.set(id, resolve);
        send({ type: "checkpoint", name, data, id });
      }),
    stopped,
  };
  send({ type: "ready", name: "ready", data: null });
  await main(ctx);
  // The IPC channel keeps the process alive; once main is done, so is the worker.
  process.disconnect?.();
}
