import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// watchTimers patches the process's globals, so it runs in a Node of its own.
const timersModule = fileURLToPath(new URL("./timers.ts", import.meta.url));

function pendingAfter(code: string): { kind: string; ms: number; callback: string }[] {
  const script = `
    import { watchTimers, pendingTimers } from ${JSON.stringify(timersModule)};
    watchTimers();
    const nodeTimers = await import("node:timers");
    const promises = await import("node:timers/promises");
    ${code}
    await new Promise((r) => setImmediate(r));
    process.stdout.write(JSON.stringify(pendingTimers()));
    process.exit(0);
  `;
  const out = execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8" });
  return JSON.parse(out) as { kind: string; ms: number; callback: string }[];
}

describe("the timers a host reports pending", () => {
  it("sees timeouts and intervals from the globals and node:timers, unref'd ones too, longest first", () => {
    const p = pendingAfter(`
      setTimeout(function relayTick() {}, 5000);
      nodeTimers.setInterval(() => {}, 60000).unref();
      void promises.setTimeout(7000);
    `);
    expect(p.map((x) => [x.kind, x.ms])).toEqual([
      ["interval", 60000],
      ["promise", 7000],
      ["timeout", 5000],
    ]);
    expect(p[2]!.callback).toContain("relayTick");
  });

  it("forgets timers that fired or were cleared, however they were cleared", () => {
    const p = pendingAfter(`
      setTimeout(() => {}, 0);
      clearTimeout(setTimeout(() => {}, 5000));
      setInterval(() => {}, 5000).close();
      nodeTimers.clearInterval(nodeTimers.setInterval(() => {}, 5000));
      await promises.setTimeout(1);
      await new Promise((r) => setTimeout(r, 5));
    `);
    expect(p).toEqual([]);
  });

  it("keeps util.promisify(setTimeout) working", () => {
    const p = pendingAfter(`
      const { promisify } = await import("node:util");
      await promisify(setTimeout)(1);
    `);
    expect(p).toEqual([]);
  });
});

describe("the record of timers", () => {
  it("forgets thousands of finished timers and keeps the pending one", () => {
    const p = pendingAfter(`
      for (let i = 0; i < 5000; i++) clearTimeout(setTimeout(() => {}, 1000));
      setTimeout(() => {}, 3000);
    `);
    expect(p.map((x) => x.ms)).toEqual([3000]);
  });
});
