#!/usr/bin/env node
// The test command of `npm run mutation`: grades the (mutated) reference and turns the verdict
// into Stryker's exit code. fail → 1 (killed). pass → 0 (survived). error → 0 as well: a
// grading that could not judge the mutant did not kill it, so it shows up as a survivor to look at.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const [id, file] = process.argv.slice(2);
const bin = join(fileURLToPath(import.meta.url), "..", "..", "bin", "msglab.js");
const r = spawnSync(process.execPath, [bin, "run", id, "--file", file, "--json"], { encoding: "utf8" });
let status = "error";
try {
  status = JSON.parse(r.stdout).status;
} catch {
  // no JSON: the CLI itself failed
}
if (status === "error") process.stderr.write(`mutant ${process.env.__STRYKER_ACTIVE_MUTANT__}: grading error, counted as survived\n${r.stdout.slice(0, 2000)}\n`);
process.exit(status === "fail" ? 1 : 0);
