/**
 * Nothing outlives a grading: not when its timeout kills it, not when the CLI is SIGKILLed in
 * the middle, not on Ctrl-C. No process, no temp folder, no vhost, queue, topic or group.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { findExercise, loadExercise } from "../src/catalog/load.ts";
import { loadConfig } from "../src/config.ts";
import { gradeSubmission } from "../src/grading/engine.ts";
import { listGradingVhosts } from "../src/brokers/rabbit-admin.ts";
import { KafkaKit } from "../src/kit/kafka.ts";
import { LAB_ROOT } from "../src/paths.ts";

const config = loadConfig();

/** Live processes whose command line mentions `path` (zombies hold nothing and do not count). */
function processesUnder(path: string): number[] {
  const pids: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${d}/stat`, "utf8"))) continue;
      if (readFileSync(`/proc/${d}/cmdline`, "utf8").includes(path)) pids.push(Number(d));
    } catch {
      // gone
    }
  }
  return pids;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("a grading run killed by its timeout", () => {
  it("leaves nothing behind", async () => {
    const ex = loadExercise("99-fixtures/hang-after-setup", 1, join(LAB_ROOT, "test", "fixtures", "exercises"), join(LAB_ROOT, "test", "fixtures", "solutions"));
    const tmpParent = mkdtempSync(join(tmpdir(), "msglab-cleanup-"));
    const report = join(tmpParent, "report.json");
    process.env.MSGLAB_TEST_REPORT = report;
    const result = await gradeSubmission(ex, ex.solutionPath, { config, timeoutMs: 12_000, tmpParent });
    delete process.env.MSGLAB_TEST_REPORT;

    expect(result.status).toBe("error");
    expect(result.message).toMatch(/timed out after 12000 ms during "creates resources, then hangs"/);
    const made = JSON.parse(readFileSync(report, "utf8")) as { queue: string; topic: string; group: string; vhost: string; tmpDir: string; hostPid: number; childPid: number };
    rmSync(report);

    expect(processesUnder(tmpParent)).toEqual([]);
    expect(readdirSync(tmpParent)).toEqual([]);
    expect(await listGradingVhosts(config.amqpUrl)).not.toContain(made.vhost);

    const kit = new KafkaKit(config.kafkaBrokers, "msglab-cleanup-test");
    const admin = await kit.admin();
    expect(await admin.listTopics()).not.toContain(made.topic);
    expect((await admin.listGroups()).groups.map((g) => g.groupId)).not.toContain(made.group);
    await kit.closeAll();
    rmSync(tmpParent, { recursive: true, force: true });
  });
});

/** The real CLI with its own TMPDIR, so everything the grading makes is under one folder. */
function startCli(args: string[], tmp: string) {
  const child = spawn(process.execPath, [join(LAB_ROOT, "bin", "msglab.js"), ...args], {
    env: { ...process.env, TMPDIR: tmp, FORCE_COLOR: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.on("close", (code, signal) => r({ code, signal })));
  return { child, exited, output: () => out };
}

// A mutant that waits on real timers: its grading takes a while, long enough to interrupt.
const SLOW = join(LAB_ROOT, "test", "mutants", "retry-backoff", "real-settimeout.ts");
const gradingStarted = (tmp: string) => () => readdirSync(tmp).some((d) => d.startsWith("msglab-")) && processesUnder(tmp).length >= 3;

describe("interruptions", () => {
  it("kill -9 of the CLI: the grading process notices, kills its hosts and cleans up within 2 s", async () => {
    const tmp = mkdtempSync(join(tmpdir(), "msglab-kill9-"));
    const cli = startCli(["run", "retry-backoff", "--file", SLOW], tmp);
    await until("the grading to start its hosts", gradingStarted(tmp), 15_000);
    cli.child.kill("SIGKILL");
    await cli.exited;
    await until("every process of the run to end", () => processesUnder(tmp).length === 0, 2500);
    await until(`the run's temp folder to go (left: ${JSON.stringify(readdirSync(tmp, { recursive: true }))})`, () => readdirSync(tmp).length === 0, 2500).catch((e) => {
      throw new Error(`${(e as Error).message}; left: ${JSON.stringify(readdirSync(tmp, { recursive: true }))}`);
    });
    rmSync(tmp, { recursive: true, force: true });
  });

  it("Ctrl-C during `check --solutions` stops at once with exit 130 and says interrupted", async () => {
    const tmp = mkdtempSync(join(tmpdir(), "msglab-sigint-"));
    const vhostsBefore = new Set(await listGradingVhosts(config.amqpUrl));
    const cli = startCli(["check", "--solutions"], tmp);
    await until("the grading to start its hosts", gradingStarted(tmp), 20_000);
    const sent = Date.now();
    cli.child.kill("SIGINT");
    const { code } = await cli.exited;
    expect(Date.now() - sent).toBeLessThan(5000);
    expect(code).toBe(130);
    expect(cli.output()).toMatch(/Interrupted/);
    expect(cli.output()).not.toMatch(/SIGKILL/);
    expect(processesUnder(tmp)).toEqual([]);
    expect(readdirSync(tmp)).toEqual([]);
    expect((await listGradingVhosts(config.amqpUrl)).filter((v) => !vhostsBefore.has(v))).toEqual([]);
    rmSync(tmp, { recursive: true, force: true });
  });

  it("Ctrl-C while `run` grades: exit 130 and nothing recorded", async () => {
    const tmp = mkdtempSync(join(tmpdir(), "msglab-sigint-run-"));
    const ex = findExercise("retry-backoff");
    const cli = startCli(["run", ex.id, "--file", SLOW, "--json"], tmp);
    await until("the grading to start its hosts", gradingStarted(tmp), 15_000);
    cli.child.kill("SIGINT");
    const { code } = await cli.exited;
    expect(code).toBe(130);
    expect(processesUnder(tmp)).toEqual([]);
    rmSync(tmp, { recursive: true, force: true });
  });
});
