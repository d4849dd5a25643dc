import { writeSync } from "node:fs";
import type { CheckResult } from "./result.ts";

/**
 * Messages from the grading child to the engine, one JSON line each on file descriptor 3.
 * Writes are synchronous so that everything sent before a crash or SIGKILL is in the pipe.
 */
export type ChildMessage =
  | { type: "plan"; checks: string[] }
  | { type: "resource"; kind: ResourceKind; name: string }
  | { type: "released"; kind: ResourceKind; name: string }
  | { type: "check-start"; index: number; name: string }
  | { type: "check-end"; index: number; result: CheckResult }
  | { type: "abort"; reason: AbortReason; message: string }
  | { type: "warning"; message: string }
  | { type: "interrupted"; why: string }
  | { type: "done" };

export type ResourceKind = "queue" | "exchange" | "topic" | "group" | "vhost";
export type AbortReason = "broker" | "syntax" | "load" | "missing-export" | "grader" | "usage";

export const CHANNEL_FD = 3;

let channelOpen = process.env.MSGLAB_CHILD === "1";

export function send(msg: ChildMessage): void {
  if (!channelOpen) return;
  try {
    writeSync(CHANNEL_FD, JSON.stringify(msg) + "\n");
  } catch {
    // The engine went away; nobody is listening, so grading can only carry on silently.
    channelOpen = false;
  }
}
