/** Integration tests: the real `msglab` binary against the real brokers. */
import { spawn } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { afterAll, describe, expect, it } from "vitest";
import { findExercise, loadCourse } from "../src/catalog/load.ts";
import { LAB_ROOT } from "../src/paths.ts";
import { msglab, runJson } from "./support/cli.ts";

const broken = (name: string) => join(LAB_ROOT, "test", "fixtures", "broken", name);
const scratch = mkdtempSync(join(tmpdir(), "msglab-cli-test-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("msglab list", () => {
  it("lists every exercise with its scaffold and solution paths", async () => {
    const r = await msglab(["list", "--json"], { MSGLAB_WORKSPACE: join(scratch, "ws-list") });
    expect(r.code).toBe(0);
    const { exercises } = JSON.parse(r.stdout) as { exercises: Record<string, unknown>[] };
    expect(exercises.map((e) => e.id)).toEqual(loadCourse().map((e) => e.id));
    for (const e of exercises) {
      expect(e).toMatchObject({ status: "not-started" });
      expect(Object.keys(e)).toEqual(expect.arrayContaining(["id", "title", "topic", "seed", "brokers", "status", "scaffold", "solution"]));
      expect(readFileSync(String(e.scaffold), "utf8")).toMatch(/TODO/);
      expect(readFileSync(String(e.solution), "utf8").length).toBeGreaterThan(0);
    }
  });

  it("answers without loading amqplib, kafkajs or better-sqlite3", async () => {
    const r = await new Promise<{ code: number | null; err: string }>((resolve) => {
      const child = spawn(process.execPath, ["--import", join(LAB_ROOT, "test", "support", "forbid-heavy.mjs"), join(LAB_ROOT, "bin", "msglab.js"), "list"], {
        env: { ...process.env, MSGLAB_WORKSPACE: join(scratch, "ws-list") },
      });
      let err = "";
      child.stderr.on("data", (d: Buffer) => (err += d.toString()));
      child.on("close", (code) => resolve({ code, err }));
    });
    expect(r.err).not.toMatch(/forbidden import/);
    expect(r.code).toBe(0);
  });
});

describe("msglab run --file", () => {
  for (const ex of loadCourse()) {
    it(`${ex.id}: the solution passes and the scaffold fails`, async () => {
      const good = await runJson(ex.id, ex.solutionPath);
      expect(good.status, JSON.stringify(good.checks, null, 1)).toBe("pass");
      expect(good).toMatchObject({ version: 2, status: "pass", message: null, exercise: ex.id, score: good.maxScore });
      expect(good.tests.length).toBe(good.maxScore);
      const bad = await runJson(ex.id, ex.scaffoldPath);
      expect(bad.status).toBe("fail");
      expect(bad.checks.find((c) => c.status === "fail")?.hint).toBeTruthy();
    });
  }

  it("exits 0 on pass, 1 on fail, 2 on usage errors", async () => {
    const ex = findExercise("event-store-snapshots");
    expect((await msglab(["run", ex.id, "--file", ex.solutionPath])).code).toBe(0);
    expect((await msglab(["run", ex.id, "--file", ex.scaffoldPath])).code).toBe(1);
    const unknown = await msglab(["run", "no-such-exercise"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/msglab list/);
  });

  it("grades a file anywhere on disk, with no node_modules beside it", async () => {
    const ex = findExercise("priority-queue");
    const dir = mkdtempSync(join(tmpdir(), "msglab-loose-"));
    const file = join(dir, "mine.ts");
    copyFileSync(ex.solutionPath, file);
    try {
      const r = await runJson(ex.id, file);
      expect(r.status, JSON.stringify(r.checks, null, 1)).toBe("pass");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("seeds", () => {
  it("--seed is echoed in the result, and --repeat grades with a new seed each time", async () => {
    const ex = findExercise("event-store-snapshots");
    const one = await runJson(ex.id, ex.solutionPath, ["--seed", "4242"]);
    expect(one.seed).toBe(4242);
    const r = await msglab(["run", ex.id, "--file", ex.solutionPath, "--repeat", "3", "--seed", "7", "--json"]);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as { repeat: number; passed: number; runs: { seed: number }[] };
    expect(report).toMatchObject({ repeat: 3, passed: 3 });
    expect(report.runs.map((x) => x.seed)).toEqual([7, 8, 9]);
    const pretty = await msglab(["run", ex.id, "--file", ex.scaffoldPath, "--repeat", "2"]);
    expect(pretty.code).toBe(1);
    expect(pretty.stdout).toMatch(/passed 0\/2; replay a failure with --seed \d+/);
  });
});

describe("error paths give `error` with a message that names the cause", () => {
  const id = "event-store-snapshots";
  it("a syntax error", async () => {
    const r = await runJson(id, broken("syntax-error.ts"));
    expect(r.status).toBe("error");
    expect(r.message).toMatch(/Syntax error/);
    expect(r.message).toMatch(/syntax-error\.ts:2:/);
  });
  it("a missing export", async () => {
    const r = await runJson(id, broken("missing-export.ts"));
    expect(r.status).toBe("error");
    expect(r.message).toMatch(/`createEventStore` is not exported/);
  });
  it("code that never returns: each check times out on its own, and nothing ran means `error`", async () => {
    const r = await runJson(id, broken("never-returns.ts"), ["--timeout", "10"]);
    expect(r.status).toBe("error");
    expect(r.message).toMatch(/Timed out after \d+ ms|time limit was used up/);
    expect(r.tests.every((t) => t.status === "error" && t.cause === "submission")).toBe(true);
    expect(r.labError).toBe(false);
  });
  it("a call to process.exit(0) ends only the learner's own process: each check fails and says why", async () => {
    const r = await runJson(id, broken("calls-exit.ts"));
    expect(r.status).toBe("fail");
    expect(r.tests[0]!.message).toMatch(/called process\.exit\(0\)/);
  });
  it("RabbitMQ unreachable", async () => {
    const ex = findExercise("priority-queue");
    const r = await runJson(ex.id, ex.solutionPath, [], { MSGLAB_AMQP_URL: "amqp://guest:guest@127.0.0.1:1" });
    expect(r.status).toBe("error");
    expect(r.message).toMatch(/RabbitMQ is not reachable at amqp:\/\/guest:\*\*\*@127\.0\.0\.1:1/);
    expect(r.message).toMatch(/msglab up/);
    expect(r.labError).toBe(true);
  });
});

describe("msglab check", () => {
  it("keeps going past a broken exercise and reports each one", async () => {
    const ws = join(scratch, "ws-check");
    const store = findExercise("event-store-snapshots");
    const pq = findExercise("priority-queue");
    mkdirSync(join(ws, store.id), { recursive: true });
    mkdirSync(join(ws, pq.id), { recursive: true });
    copyFileSync(broken("syntax-error.ts"), join(ws, store.id, store.entry));
    copyFileSync(pq.solutionPath, join(ws, pq.id, pq.entry));
    const r = await msglab(["check", "--reporter", "json"], { MSGLAB_WORKSPACE: ws });
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as { results: { exercise: string; status: string }[] };
    expect(report.results.map((x) => [x.exercise, x.status])).toEqual(
      loadCourse()
        .filter((e) => e.id === store.id || e.id === pq.id)
        .map((e) => [e.id, e.id === store.id ? "error" : "pass"]),
    );
    const list = JSON.parse((await msglab(["list", "--json"], { MSGLAB_WORKSPACE: ws })).stdout) as { exercises: { id: string; status: string }[] };
    expect(list.exercises.find((e) => e.id === pq.id)?.status).toBe("passed");
    expect(list.exercises.find((e) => e.id === store.id)?.status).toBe("started");
  });

  it("--solutions --reporter junit writes valid JUnit XML", async () => {
    const out = join(scratch, "junit.xml");
    const r = await msglab(["check", "--solutions", "--reporter", "junit", "--out", out]);
    expect(r.code, r.stderr).toBe(0);
    const xml = readFileSync(out, "utf8");
    expect(XMLValidator.validate(xml)).toBe(true);
    const doc = new XMLParser({ ignoreAttributes: false }).parse(xml) as { testsuites: Record<string, unknown> };
    expect(doc.testsuites["@_failures"]).toBe("0");
    expect(doc.testsuites["@_errors"]).toBe("0");
    const suites = ([] as { "@_name": string }[]).concat(doc.testsuites.testsuite as never);
    expect(suites.map((s) => s["@_name"])).toEqual(loadCourse().map((e) => e.id));
  });
});
