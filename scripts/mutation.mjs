#!/usr/bin/env node
// npm run mutation -- <exercise> [--concurrency N]
//
// Mutation testing of a grader: StrykerJS mutates the exercise's reference solution, and the
// exercise's own grader is the test: a mutant the grader fails is killed, one it passes survived.
// A survivor is either a check that should exist, or an equivalent mutant: list it, with the
// reason, in exercises/<topic>/<slug>/mutation.md. Not part of CI (too slow); the report lands in
// .bench/mutation/<slug>/.
import { mkdirSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = join(fileURLToPath(import.meta.url), "..", "..");
const args = process.argv.slice(2);
const id = args.find((a) => !a.startsWith("--"));
if (!id) {
  console.error("usage: npm run mutation -- <exercise> [--concurrency N]");
  process.exit(2);
}
const ci = args.indexOf("--concurrency");
const concurrency = ci >= 0 ? Number(args[ci + 1]) : 2;

const course = JSON.parse(spawnSync(process.execPath, [join(root, "bin", "msglab.js"), "list", "--json"], { encoding: "utf8" }).stdout);
const ex = (course.exercises ?? course).find((e) => e.id === id);
if (!ex) {
  console.error(`There is no exercise "${id}". Run \`msglab list\`.`);
  process.exit(2);
}
const solution = relative(root, ex.solution);
const out = join(root, ".bench", "mutation", id);
mkdirSync(out, { recursive: true });
const config = {
  $schema: "./node_modules/@stryker-mutator/core/schema/stryker-schema.json",
  packageManager: "npm",
  testRunner: "command",
  // The grader is the test. Exit 0 (pass) means the mutant survived.
  commandRunner: { command: `node scripts/mutation-grade.mjs ${id} ${solution}` },
  mutate: [solution],
  coverageAnalysis: "off",
  concurrency,
  timeoutMS: 60_000,
  timeoutFactor: 2,
  tempDirName: ".stryker-tmp",
  cleanTempDir: process.env.MUTATION_KEEP_SANDBOX ? false : true,
  ignorePatterns: [".bench", ".stryker-tmp*", "msglab-workspace", ".test-workspaces", ".scratch"],
  reporters: ["clear-text", "json", "html"],
  jsonReporter: { fileName: join(out, "mutation.json") },
  htmlReporter: { fileName: join(out, "mutation.html") },
  disableTypeChecks: solution,
};
const configFile = join(out, "stryker.config.json");
writeFileSync(configFile, JSON.stringify(config, null, 2));
const r = spawnSync(process.execPath, [join(root, "node_modules", "@stryker-mutator", "core", "bin", "stryker.js"), "run", configFile], { cwd: root, stdio: "inherit" });
process.exit(r.status ?? 1);
