#!/usr/bin/env node
// Thin shim: make sure the lab is compiled (once per change of its sources), then run the CLI.
import { pathToFileURL } from "node:url";
import { join } from "node:path";
import { labBuild } from "../src/build/lab-build.mjs";

const build = await labBuild();
await import(pathToFileURL(join(build, "lab", "src", "cli.js")).href);
