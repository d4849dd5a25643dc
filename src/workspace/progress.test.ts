import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import type { RunResult } from "../grading/result.ts";
import { LAB_ROOT } from "../paths.ts";
import { ProgressStore } from "./progress.ts";
import { readStatuses } from "./status.ts";

const result = (exercise: string, status: RunResult["status"]): RunResult => ({
  version: 2,
  runId: "0000abcd",
  summary: "",
  labError: status === "error",
  tests: [],
  exercise,
  submission: "x.ts",
  status,
  message: null,
  seed: 1,
  score: status === "pass" ? 1 : 0,
  maxScore: 1,
  durationMs: 1,
  checks: [],
  output: null,
  warnings: [],
  sandbox: "bwrap",
});

describe("ProgressStore", () => {
  it("records status, attempts and hints, and an error never downgrades a pass", async () => {
    const ws = mkdtempSync(join(tmpdir(), "msglab-progress-"));
    const store = await ProgressStore.open(ws);
    store.recordResult(result("a", "fail"));
    store.recordResult(result("a", "pass"));
    store.recordResult(result("a", "error"));
    expect(store.get("a")).toMatchObject({ status: "passed", attempts: 3 });
    expect(store.nextHint("a", 2)).toBe(1);
    expect(store.nextHint("a", 2)).toBe(2);
    expect(store.nextHint("a", 2)).toBe(2);
    store.close();
    expect(readStatuses(ws)).toEqual({ a: { status: "passed", attempts: 3, hintsSeen: 2 } });
  });

  it("survives a SIGKILL in the middle of a stream of writes", async () => {
    const ws = mkdtempSync(join(tmpdir(), "msglab-progress-kill-"));
    const writer = `
      import { ProgressStore } from ${JSON.stringify(join(LAB_ROOT, "src/workspace/progress.ts"))};
      const store = await ProgressStore.open(${JSON.stringify(ws)});
      for (let i = 0; ; i++) {
        store.recordResult({ version: 1, exercise: "e" + (i % 7), submission: "x", status: i % 2 ? "pass" : "fail", message: "x".repeat(i % 5000), seed: i, score: 0, maxScore: 1, durationMs: 1, checks: [], output: null });
        if (i === 50) process.stdout.write("writing\\n");
      }`;
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", writer], { cwd: LAB_ROOT, stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
    child.kill("SIGKILL");
    await new Promise((r) => child.once("close", r));

    const db = new Database(join(ws, ".msglab", "progress.db"));
    expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    const rows = db.prepare("SELECT last_result FROM progress").all() as { last_result: string }[];
    expect(rows.length).toBe(7);
    for (const r of rows) expect(() => JSON.parse(r.last_result)).not.toThrow();
    db.close();
    const snapshot = join(ws, ".msglab", "status.json");
    expect(existsSync(snapshot)).toBe(true);
    expect(() => JSON.parse(readFileSync(snapshot, "utf8"))).not.toThrow();
    const reopened = await ProgressStore.open(ws);
    expect(reopened.all().length).toBe(7);
    reopened.close();
  });
});
