import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { processTree } from "./proc-tree.ts";

describe("processTree", () => {
  it("lists a process, then its children and grandchildren, each after its parent", async () => {
    // sh → (sh → sleep) and sleep: two levels under the root.
    const root = spawn("sh", ["-c", "sh -c 'sleep 30; true' & sleep 30 & wait"], { stdio: "ignore" });
    try {
      let tree: number[] | null = null;
      for (let i = 0; i < 100 && (tree?.length ?? 0) < 4; i++) {
        await new Promise((r) => setTimeout(r, 20));
        tree = processTree(root.pid!);
      }
      expect(tree![0]).toBe(root.pid);
      expect(tree!.length).toBe(4);
    } finally {
      for (const p of (processTree(root.pid!) ?? []).reverse()) process.kill(p, "SIGKILL");
    }
  });

  it("is null for a process that does not exist", () => {
    expect(processTree(2 ** 22 + 12345)).toBeNull();
  });
});
