/**
 * `msglab grade`, run for real on a synthetic class: every student × exercise gets the outcome
 * it must; a run killed with -9 resumes to the same gradebook; shards merge to the unsharded
 * result; a broker that goes away mid-run turns gradings into lab errors that the next run
 * regrades; report.html renders in a real browser with the pass rates of results.json.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import { XMLValidator } from "fast-xml-parser";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.ts";
import type { ResultsEntry } from "../src/classroom/reports.ts";
import { buildClass, type ClassSpec } from "./support/class.ts";
import { msglab } from "./support/cli.ts";
import { LAB_ROOT } from "../src/paths.ts";

const EXERCISES = ["retry-backoff", "event-store-snapshots", "publisher-confirms"];
const DEADLINE = "2026-02-01T00:00:00Z";
const config = loadConfig();
let root = "";
let roster = "";
let spec: ClassSpec;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "msglab-grade-test-"));
  roster = join(root, "roster");
  spec = buildClass(roster, EXERCISES, DEADLINE);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const args = (out: string, extra: string[] = []) => ["grade", roster, "--exercises", EXERCISES.join(","), "--out", out, "--before", DEADLINE, "--jobs", "4", ...extra];
const results = (out: string) => JSON.parse(readFileSync(join(out, "results.json"), "utf8")) as ResultsEntry[];
const statuses = (out: string) => new Map(results(out).map((r) => [`${r.student}/${r.exercise}`, r.status]));

function expectClass(out: string): void {
  const got = statuses(out);
  for (const [student, byEx] of spec.expected) {
    for (const [ex, want] of byEx) {
      const status = got.get(`${student}/${ex}`);
      expect(want.split("|"), `${student} × ${ex}: got ${status}, expected ${want}`).toContain(status);
    }
  }
  expect(got.size).toBe([...spec.expected.values()].reduce((n, m) => n + m.size, 0));
}

describe("msglab grade", () => {
  let out = "";
  it("grades every student × exercise as expected and writes all five outputs", { timeout: 600_000 }, async () => {
    out = join(root, "out-full");
    const r = await msglab(args(out));
    expect(r.code, r.stderr).toBe(0);
    for (const f of ["gradebook.db", "results.json", "grades.csv", "junit.xml", "report.html"]) expect(existsSync(join(out, f)), f).toBe(true);
    expectClass(out);

    const entries = results(out);
    const adaRetry = entries.find((e) => e.student === "ada" && e.exercise === "retry-backoff")!;
    expect(adaRetry.result?.version).toBe(2);
    expect(adaRetry.submissionSha256).toMatch(/^[0-9a-f]{64}$/);
    const gus = entries.find((e) => e.student === "gus")!;
    expect(gus.commit).toMatch(/^[0-9a-f]{40}$/);
    const fay = entries.filter((e) => e.student === "fay");
    expect(fay.find((e) => e.exercise === "retry-backoff")!.message).toMatch(/holds solution\.ts, but the exercise's file is retry\.ts/);
    expect(fay.find((e) => e.exercise === "event-store-snapshots")!.message).toMatch(/2 candidate files/);
    expect(fay.find((e) => e.exercise === "publisher-confirms")!.message).toMatch(/outside the roster/);

    const csv = readFileSync(join(out, "grades.csv"), "utf8").trim().split("\n");
    expect(csv[0]).toBe(["student", ...EXERCISES.slice().sort((a, b) => order(a) - order(b)), "total"].join(","));
    expect(csv.length).toBe(1 + spec.expected.size);
    expect(XMLValidator.validate(readFileSync(join(out, "junit.xml"), "utf8"))).toBe(true);
    const db = new Database(join(out, "gradebook.db"), { readonly: true });
    expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    db.close();
  });

  it("grading again grades nothing unchanged", { timeout: 120_000 }, async () => {
    const r = await msglab([...args(out), "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ graded: 0 });
  });

  it("resumes after kill -9: the same gradebook as an uninterrupted run, nothing twice", { timeout: 600_000 }, async () => {
    const resumed = join(root, "out-resumed");
    const child = spawn(process.execPath, [join(LAB_ROOT, "bin", "msglab.js"), ...args(resumed)], { stdio: "ignore" });
    const book = join(resumed, "gradebook.db");
    // Kill it once a few gradings are recorded, mid-run.
    for (;;) {
      await new Promise((r) => setTimeout(r, 100));
      if (!existsSync(book)) continue;
      const db = new Database(book, { readonly: true, fileMustExist: true });
      const n = (db.prepare("SELECT count(*) AS n FROM gradings WHERE seed IS NOT NULL").get() as { n: number }).n;
      db.close();
      if (n >= 3) break;
    }
    child.kill("SIGKILL");
    await new Promise((r) => child.once("close", r));
    const again = await msglab(args(resumed));
    expect(again.code, again.stderr).toBe(0);
    expect(statuses(resumed)).toEqual(statuses(out));
    const db = new Database(book, { readonly: true });
    expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    const dup = db.prepare("SELECT student, exercise, count(*) AS n FROM gradings WHERE current = 1 GROUP BY student, exercise HAVING n > 1").all();
    expect(dup).toEqual([]);
    db.close();
  });

  it("--shard 1/2 and 2/2, merged, equal the unsharded run", { timeout: 600_000 }, async () => {
    const a = join(root, "shard-1");
    const b = join(root, "shard-2");
    const merged = join(root, "merged");
    for (const [dir, shard] of [[a, "1/2"], [b, "2/2"]] as const) {
      const r = await msglab(args(dir, ["--shard", shard]));
      expect(r.code, r.stderr).toBe(0);
    }
    expect(results(a).length).toBeGreaterThan(0);
    expect(results(b).length).toBeGreaterThan(0);
    expect(results(a).length + results(b).length).toBe(results(out).length);
    const m = await msglab(["grade", "merge", a, b, "--out", merged]);
    expect(m.code, m.stderr).toBe(0);
    expect(statuses(merged)).toEqual(statuses(out));
  });

  it("a broker that goes away mid-run: those gradings are lab errors (exit 1), and the next run regrades only them", { timeout: 600_000 }, async () => {
    const dir = join(root, "out-broker");
    const gate = await Forwarder.start(new URL(config.amqpUrl));
    try {
      gate.down();
      const env = { MSGLAB_AMQP_URL: gate.url(config.amqpUrl), MSGLAB_RABBIT_MANAGEMENT_URL: "http://127.0.0.1:15672" };
      const r = await msglab(args(dir, ["--json"]), env);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/because of the lab or the brokers/);
      const rabbit = results(dir).filter((e) => e.exercise === "publisher-confirms" && e.result);
      expect(rabbit.length).toBeGreaterThan(0);
      for (const e of rabbit) {
        expect(e.status).toBe("error");
        expect(e.result!.labError).toBe(true);
      }
      gate.up();
      const again = await msglab(args(dir, ["--json"]), env);
      expect(again.code, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout).graded).toBe(rabbit.length);
      expect(statuses(dir)).toEqual(statuses(out));
    } finally {
      await gate.close();
    }
  });

  it("refuses to run without bubblewrap unless --no-os-sandbox, and then records it", { timeout: 300_000 }, async () => {
    const dir = join(root, "out-nosandbox");
    const env = { MSGLAB_BWRAP: "/nonexistent/bwrap" };
    const refused = await msglab(["grade", roster, "--exercises", "retry-backoff", "--out", dir], env);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/bubblewrap[\s\S]*--no-os-sandbox/);
    const r = await msglab(["grade", roster, "--exercises", "retry-backoff", "--out", dir, "--no-os-sandbox", "--before", DEADLINE], env);
    expect(r.code, r.stderr).toBe(0);
    const graded = results(dir).filter((e) => e.result);
    expect(graded.length).toBeGreaterThan(0);
    for (const e of graded) expect(e.result!.sandbox).toBe("permission");
  });

  it("report.html: every cell, a cell's checks, and the pass rates of results.json, in a real browser", { timeout: 120_000 }, async () => {
    const { chromium } = await import("playwright-core");
    const browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    try {
      const page = await browser.newPage();
      const network: string[] = [];
      page.on("request", (req) => {
        if (!req.url().startsWith("file:")) network.push(req.url());
      });
      await page.goto(pathToFileURL(join(out, "report.html")).href);
      const entries = results(out);
      const students = new Set(entries.map((e) => e.student));
      expect(await page.locator("td.cell").count()).toBe(students.size * EXERCISES.length);

      // Open one cell: that student's checks, with messages.
      await page.locator('td.cell[data-student="cy"][data-exercise="retry-backoff"]').click();
      const detail = page.locator("#detail");
      await detail.waitFor({ state: "visible" });
      const cyRetry = entries.find((e) => e.student === "cy" && e.exercise === "retry-backoff")!;
      expect(await detail.locator("li").count()).toBe(cyRetry.result!.tests.length);
      const failed = cyRetry.result!.tests.find((t) => t.status === "fail")!;
      expect(await detail.textContent()).toContain(failed.name);

      // Pass rates shown equal those computed from results.json.
      for (const ex of EXERCISES) {
        const rows = entries.filter((e) => e.exercise === ex);
        const want = rows.filter((e) => e.status === "pass").length / rows.length;
        const shown = Number(await page.locator(`#exercise-rates tr[data-exercise="${ex}"] td.rate`).getAttribute("data-rate"));
        expect(shown).toBeCloseTo(want, 6);
        const checks = new Map<string, [number, number]>();
        for (const r of rows) for (const t of r.result?.tests ?? []) {
          const c = checks.get(t.name) ?? [0, 0];
          checks.set(t.name, [c[0] + (t.status === "pass" ? 1 : 0), c[1] + 1]);
        }
        for (const [name, [ok, ran]] of checks) {
          const row = page.locator(`#check-rates tr[data-exercise="${ex}"]`).filter({ has: page.locator("td", { hasText: name }) }).first();
          expect(Number(await row.locator("td.rate").getAttribute("data-rate")), `${ex} / ${name}`).toBeCloseTo(ok / ran, 6);
        }
      }
      // Sorting by total puts the best student first.
      await page.locator('#matrix th[data-col="total"]').click();
      expect(await page.locator("#matrix tbody tr").first().getAttribute("data-student")).toMatch(/^(ada|dee)$/);
      await page.screenshot({ path: join(LAB_ROOT, ".bench", "report.png"), fullPage: true });
      expect(network).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});

function order(id: string): number {
  return ["at-least-once-consumer", "publisher-confirms", "priority-queue", "transactional-producer", "exactly-once-consumer", "event-store-snapshots", "retry-backoff"].indexOf(id);
}

/** A TCP forwarder to RabbitMQ that the test can take down (connections cut, new ones refused) and bring back. */
class Forwarder {
  private sockets = new Set<Socket>();
  private isDown = false;
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}
  static async start(target: URL): Promise<Forwarder> {
    let f!: Forwarder;
    const server = createServer((c) => {
      if (f.isDown) return void c.destroy();
      const o = connect(Number(target.port || 5672), target.hostname);
      for (const s of [c, o]) {
        f.sockets.add(s);
        s.on("close", () => f.sockets.delete(s));
        s.on("error", () => {
          c.destroy();
          o.destroy();
        });
      }
      c.pipe(o);
      o.pipe(c);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    f = new Forwarder(server, (server.address() as { port: number }).port);
    return f;
  }
  url(amqpUrl: string): string {
    const u = new URL(amqpUrl);
    u.port = String(this.port);
    return u.toString();
  }
  down(): void {
    this.isDown = true;
    for (const s of this.sockets) s.destroy();
  }
  up(): void {
    this.isDown = false;
  }
  close(): Promise<void> {
    this.down();
    return new Promise((r) => this.server.close(() => r()));
  }
}
