/** A grader killed by its timeout leaves no process, queue, topic, consumer group or temp file behind. */
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import amqp from "amqplib";
import { describe, expect, it } from "vitest";
import { loadExercise } from "../src/catalog/load.ts";
import { loadConfig } from "../src/config.ts";
import { gradeSubmission } from "../src/grading/engine.ts";
import { KafkaKit } from "../src/kit/kafka.ts";
import { LAB_ROOT } from "../src/paths.ts";

const config = loadConfig();
/** A zombie (killed, not yet reaped by init) holds nothing, so it counts as gone. */
const alive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
};

describe("a grading run killed by its timeout", () => {
  it("leaves nothing behind", async () => {
    const ex = loadExercise("99-fixtures/hang-after-setup", 1, join(LAB_ROOT, "test", "fixtures", "exercises"), join(LAB_ROOT, "test", "fixtures", "solutions"));
    const report = join(mkdtempSync(join(tmpdir(), "msglab-cleanup-")), "report.json");
    process.env.MSGLAB_TEST_REPORT = report;
    const result = await gradeSubmission(ex, ex.solutionPath, { config, timeoutMs: 12_000 });
    delete process.env.MSGLAB_TEST_REPORT;

    expect(result.status).toBe("error");
    expect(result.message).toMatch(/timed out after 12000 ms during "creates resources, then hangs"/);
    const made = JSON.parse(readFileSync(report, "utf8")) as { queue: string; topic: string; group: string; tmpDir: string; workerPid: number; childPid: number };

    expect(alive(made.childPid)).toBe(false);
    expect(alive(made.workerPid)).toBe(false);
    expect(existsSync(made.tmpDir)).toBe(false);

    const conn = await amqp.connect(config.amqpUrl);
    conn.on("error", () => {});
    const ch = await conn.createChannel();
    ch.on("error", () => {});
    await expect(ch.checkQueue(made.queue)).rejects.toThrow(/NOT_FOUND/);
    await conn.close().catch(() => {});

    const kit = new KafkaKit(config.kafkaBrokers, "msglab-cleanup-test");
    const admin = await kit.admin();
    expect(await admin.listTopics()).not.toContain(made.topic);
    expect((await admin.listGroups()).groups.map((g) => g.groupId)).not.toContain(made.group);
    await kit.closeAll();
  });
});
