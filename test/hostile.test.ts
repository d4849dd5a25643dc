/**
 * Hostile submissions: each file in test/hostile/<exercise>/ attacks the lab instead of solving
 * the exercise (forged results, the reference re-exported, patched graders and globals, escapes
 * from the sandbox, runaway processes, leaked broker state). Every one must end in `fail` or
 * `error`, never `pass`, and leave nothing behind: no process, no temp folder, no vhost, queue or
 * topic, no file outside its folder, no change to the lab. The suite runs twice: under
 * bubblewrap (with Node's permission model inside) and with the permission model alone.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findExercise, loadExercise } from "../src/catalog/load.ts";
import { loadConfig } from "../src/config.ts";
import { gradeSubmission } from "../src/grading/engine.ts";
import { bubblewrapStatus, type SandboxMode } from "../src/grading/sandbox.ts";
import { listGradingVhosts } from "../src/brokers/rabbit-admin.ts";
import { KafkaKit } from "../src/kit/kafka.ts";
import { LAB_ROOT } from "../src/paths.ts";

const config = loadConfig();
const HOSTILE = join(LAB_ROOT, "test", "hostile");
const CANARY_FILE = "/tmp/msglab-hostile-canary";
const SECRET = `msglab-secret-${process.pid}-${Date.now()}`;

interface Attack {
  exercise: string;
  name: string;
  file: string;
  what: string;
  expect: string[];
  setup: string | null;
  only: string[] | undefined;
  timeoutMs: number | undefined;
  /** At least this many checks pass: proof that the others ran despite the attack. */
  minPassed: number;
}

function attacks(): Attack[] {
  const out: Attack[] = [];
  for (const exercise of readdirSync(HOSTILE).sort()) {
    for (const f of readdirSync(join(HOSTILE, exercise)).filter((x) => x.endsWith(".ts") && x !== "link.ts").sort()) {
      const text = readFileSync(join(HOSTILE, exercise, f), "utf8");
      const header = (tag: string) => new RegExp(`^// @${tag} (.+)$`, "m").exec(text)?.[1]?.trim() ?? null;
      out.push({
        exercise,
        name: f.replace(/\.ts$/, ""),
        file: join(HOSTILE, exercise, f),
        what: /^\/\/ Attack: (.+)$/m.exec(text)?.[1] ?? "",
        expect: (header("expect") ?? "fail|error").split("|"),
        setup: header("setup"),
        only: header("only")?.split(" | "),
        timeoutMs: header("timeout") ? Number(header("timeout")) * 1000 : undefined,
        minPassed: Number(header("min-passed") ?? 0),
      });
    }
  }
  return out;
}

function exerciseFor(id: string) {
  if (id === "broker-leak") return loadExercise("99-fixtures/broker-leak", 1, join(LAB_ROOT, "test", "fixtures", "exercises"), join(LAB_ROOT, "test", "fixtures", "solutions"));
  return findExercise(id);
}

/** A fingerprint of the lab's own code: no submission may change it. */
function labHash(): string {
  const h = createHash("sha256");
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) h.update(relative(LAB_ROOT, p)).update(readFileSync(p));
    }
  };
  for (const d of ["src", "exercises", "solutions", "bin"]) walk(join(LAB_ROOT, d));
  return h.digest("hex");
}

/** Processes whose command line mentions `path` (a host's bwrap or node, a grading process). */
function processesUnder(path: string): number[] {
  const pids: number[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      if (/^\d+ \(.*\) Z/.test(stat)) continue; // a zombie holds nothing
      if (readFileSync(`/proc/${d}/cmdline`, "utf8").includes(path)) pids.push(Number(d));
    } catch {
      // gone
    }
  }
  return pids;
}

async function kafkaTopics(): Promise<string[]> {
  const kit = new KafkaKit(config.kafkaBrokers, "msglab-hostile-test");
  try {
    return await (await kit.admin()).listTopics();
  } finally {
    await kit.closeAll();
  }
}

const modes: SandboxMode[] = ["bwrap", "permission"];

beforeAll(() => {
  process.env.MSGLAB_HOSTILE_SECRET = SECRET;
});
afterAll(() => {
  delete process.env.MSGLAB_HOSTILE_SECRET;
});

it("bubblewrap is available here (the hostile suite needs both modes; .ci/run installs it)", () => {
  expect(bubblewrapStatus()).toEqual({ ok: true, why: "" });
});

for (const mode of modes) {
  describe(`hostile submissions, sandbox: ${mode}`, () => {
    for (const a of attacks()) {
      it(`${a.exercise}/${a.name}: ${a.what}`, { timeout: 120_000 }, async () => {
        const ex = exerciseFor(a.exercise);
        const tmpParent = mkdtempSync(join(tmpdir(), "msglab-hostile-"));
        rmSync(CANARY_FILE, { force: true });
        const link = join(HOSTILE, a.exercise, "link.ts");
        if (a.setup?.startsWith("symlink ")) {
          const [, name, target] = a.setup.split(" ");
          rmSync(join(HOSTILE, a.exercise, name!), { force: true });
          symlinkSync(join(LAB_ROOT, target!), join(HOSTILE, a.exercise, name!));
        }
        const before = labHash();
        try {
          const r = await gradeSubmission(ex, a.file, { config, sandbox: mode, tmpParent, only: a.only, timeoutMs: a.timeoutMs });
          const said = r.checks.map((c) => `${c.status} ${c.name}: ${c.message}`).join("\n");
          expect(r.status, `${a.name} must not pass:\n${said}`).not.toBe("pass");
          expect(a.expect, `${a.name} ended ${r.status}:\n${said}`).toContain(r.status);
          expect(r.sandbox).toBe(mode);
          expect(r.checks.filter((c) => c.status === "pass").length, `${a.name}: the other checks must still run`).toBeGreaterThanOrEqual(a.minPassed);
          // Nothing of the CLI's environment reached the submission.
          expect(JSON.stringify(r)).not.toContain(SECRET);
          // Nothing left behind.
          expect(processesUnder(tmpParent), "processes of the run still alive").toEqual([]);
          expect(readdirSync(tmpParent), "the run's temp folder was not removed").toEqual([]);
          expect(existsSync(CANARY_FILE), `${a.name} wrote ${CANARY_FILE}`).toBe(false);
          expect(labHash(), `${a.name} changed the lab's files`).toBe(before);
          // Only gradings of RabbitMQ exercises make vhosts (and others' may be running meanwhile).
          expect(await listGradingVhosts(config.amqpUrl), "the grading's vhost was left").not.toContain(`msglab-${r.runId}`);
          if (a.exercise === "broker-leak") expect((await kafkaTopics()).filter((t) => t.startsWith("hostile"))).toEqual([]);
        } finally {
          if (a.setup?.startsWith("symlink ") && existsSync(link)) unlinkSync(link);
          rmSync(tmpParent, { recursive: true, force: true });
        }
      });
    }
  });
}
