/** The learner's loop through the real binary: run creates a copy, hint steps, reset keeps a backup. */
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { findExercise } from "../src/catalog/load.ts";
import { LAB_ROOT } from "../src/paths.ts";
import { msglab } from "./support/cli.ts";

const ws = mkdtempSync(join(tmpdir(), "msglab-ws-"));
const env = { MSGLAB_WORKSPACE: ws };
afterAll(() => rmSync(ws, { recursive: true, force: true }));
const ex = findExercise("event-store-snapshots");

describe("the learner's workspace", () => {
  it("run creates the copy from the scaffold, prints the brief, grades it and records the attempt", async () => {
    const r = await msglab(["run", ex.id], env);
    expect(r.code).toBe(1);
    const copy = join(ws, ex.id, ex.entry);
    expect(readFileSync(copy, "utf8")).toBe(readFileSync(ex.scaffoldPath, "utf8"));
    expect(r.stdout).toContain(readFileSync(ex.briefPath, "utf8").split("\n")[0]!);
    expect(r.stdout).toMatch(/FAIL/);
    expect(existsSync(join(ws, "tsconfig.json"))).toBe(true);
    const list = JSON.parse((await msglab(["list", "--json"], env)).stdout) as { exercises: { id: string; status: string }[] };
    expect(list.exercises.find((e) => e.id === ex.id)?.status).toBe("failing");
  });

  it("hint shows one more hint each call, then says it was the last", async () => {
    const first = await msglab(["hint", ex.id], env);
    expect(first.stdout).toContain(ex.hints[0]!);
    expect(first.stdout).not.toContain(ex.hints[1]!);
    for (let i = 1; i < ex.hints.length; i++) await msglab(["hint", ex.id], env);
    const last = await msglab(["hint", ex.id], env);
    expect(last.stdout).toContain(ex.hints.at(-1)!);
    expect(last.stdout).toMatch(/last hint/);
  });

  it("reset restores the scaffold and keeps the learner's version", async () => {
    const copy = join(ws, ex.id, ex.entry);
    writeFileSync(copy, "// my work in progress\n");
    const r = await msglab(["reset", ex.id], env);
    expect(r.code).toBe(0);
    expect(readFileSync(copy, "utf8")).toBe(readFileSync(ex.scaffoldPath, "utf8"));
    const backups = readdirSync(join(ws, ".msglab", "backups"));
    expect(backups.length).toBe(1);
    expect(readFileSync(join(ws, ".msglab", "backups", backups[0]!), "utf8")).toBe("// my work in progress\n");
  });

  it("solution asks first, and shows the reference with --yes", async () => {
    const refused = await msglab(["solution", ex.id], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/--yes/);
    const shown = await msglab(["solution", ex.id, "--yes"], env);
    expect(shown.stdout).toContain(readFileSync(ex.solutionPath, "utf8").trim().split("\n")[0]!);
  });

  it("a workspace inside the lab folder (the default place) resolves the contracts too", async () => {
    const inside = join(LAB_ROOT, ".test-workspaces", `ws-${process.pid}`);
    try {
      await msglab(["run", ex.id], { MSGLAB_WORKSPACE: inside });
      writeFileSync(join(inside, ex.id, ex.entry), readFileSync(ex.solutionPath, "utf8"));
      const r = await msglab(["run", ex.id, "--json"], { MSGLAB_WORKSPACE: inside });
      expect((JSON.parse(r.stdout) as { status: string }).status, r.stdout).toBe("pass");
    } finally {
      rmSync(inside, { recursive: true, force: true });
    }
  });

  it("the passing copy is recorded as passed", async () => {
    writeFileSync(join(ws, ex.id, ex.entry), readFileSync(ex.solutionPath, "utf8"));
    const r = await msglab(["run", ex.id], env);
    expect(r.code).toBe(0);
    const list = JSON.parse((await msglab(["list", "--json"], env)).stdout) as { exercises: { id: string; status: string }[] };
    expect(list.exercises.find((e) => e.id === ex.id)?.status).toBe("passed");
  });
});
