/** A submission host, for real: spawned in its sandbox, driven over RPC, killed at exact points. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labBuild } from "../build/lab-build.mjs";
import { markSync } from "../host/wire.ts";
import { LAB_ROOT } from "../paths.ts";
import { compileSubmission } from "./compile.ts";
import { HostGone, HostProcess } from "./host-process.ts";
import type { SandboxMode } from "./sandbox.ts";

let root = "";
let bundle = "";
let hostMain = "";
let n = 0;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "msglab-host-test-"));
  const build = await labBuild();
  hostMain = join(build, "host", "main.js");
  const c = await compileSubmission(join(LAB_ROOT, "test", "fixtures", "kit", "host-fixture.ts"), join(root, "sub", "s.mjs"));
  if (!c.ok) throw new Error(c.message);
  bundle = c.bundle;
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function host(mode: SandboxMode, memoryMb = 256): HostProcess {
  return new HostProcess({
    bundle,
    hostMain,
    read: [join(LAB_ROOT, "node_modules"), join(hostMain, ".."), join(bundle, "..")],
    labRoot: LAB_ROOT,
    dir: join(root, `h${++n}`),
    shared: [],
    network: false,
    preload: [],
    memoryMb,
    outputLimit: 1 << 20,
    mode,
  });
}

for (const mode of ["bwrap", "permission"] as const) {
  describe(`a submission host (${mode})`, () => {
    it("reports its exports, runs calls and calls back", async () => {
      const h = host(mode);
      expect(await h.ready).toMatchObject({ count: "function", countSync: "function" });
      const seen: number[] = [];
      expect(await h.call({ export: "count" }, [3, async (i: number) => void seen.push(i)])).toBe(3);
      expect(seen).toEqual([1, 2, 3]);
      await h.kill();
    });

    it("can be SIGKILLed at an exact point inside a synchronous callback", async () => {
      const h = host(mode);
      await h.ready;
      const seen: number[] = [];
      const p = h.call({ export: "countSync" }, [
        10,
        markSync((i: number) => {
          seen.push(i);
          if (i !== 4) return undefined;
          // The host is blocked until this answers: it dies right here, before it can go on.
          void h.kill();
          return new Promise(() => {});
        }),
      ]);
      const e = await p.catch((x: unknown) => x);
      expect(e).toBeInstanceOf(HostGone);
      expect((e as HostGone).end.kind).toBe("killed");
      expect(seen).toEqual([1, 2, 3, 4]);
    });

    it("cannot read outside its view", async () => {
      const h = host(mode);
      await h.ready;
      await expect(h.call({ export: "read" }, [join(LAB_ROOT, "package.json")])).rejects.toThrow(/ENOENT|ERR_ACCESS_DENIED|restricted/);
      await h.kill();
    });

    it("is stopped by its memory cap, and says so", async () => {
      const h = host(mode, 200);
      await h.ready;
      const e = (await h.call({ export: "hog" }, []).catch((x: unknown) => x)) as HostGone;
      expect(e).toBeInstanceOf(HostGone);
      expect(e.end.kind).toBe("memory");
      expect(e.message).toMatch(/MiB of memory/);
    });
  });
}
