import { readFileSync } from "node:fs";
import { join } from "node:path";

export type ExerciseStatus = "started" | "failing" | "passed";
export type ListedStatus = ExerciseStatus | "not-started";

/**
 * Reads the status snapshot the progress store keeps beside its database. Plain JSON, so
 * `msglab list` stays free of native modules. A missing or unreadable snapshot means no progress.
 */
export function readStatuses(workspace: string): Record<string, { status: ExerciseStatus; attempts: number; hintsSeen: number }> {
  try {
    const parsed = JSON.parse(readFileSync(join(workspace, ".msglab", "status.json"), "utf8")) as {
      statuses?: Record<string, { status: ExerciseStatus; attempts: number; hintsSeen: number }>;
    };
    return parsed.statuses ?? {};
  } catch {
    return {};
  }
}
