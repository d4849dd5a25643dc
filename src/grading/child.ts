/**
 * The grading process (trusted): runs one grader against one submission and reports over fd 3.
 * The submission never runs here. It is compiled once, then loaded by submission hosts, each a
 * sandboxed process of its own that the grader drives over RPC (see src/host and src/kit/host.ts).
 * The engine starts this process in its own process group; the hosts are its children.
 */
import { mkdirSync, realpathSync, rmSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { Broker } from "../catalog/types.ts";
import { CheckFailure, LabError, isInfrastructureError } from "../kit/fail.ts";
import type { CheckContext, Grader } from "../kit/grader.ts";
import { Host, HostGone, markSync } from "../kit/host.ts";
import { RemoteError } from "../host/wire.ts";
import { KafkaKit, deleteKafkaResources } from "../kit/kafka.ts";
import { Namespace } from "../kit/names.ts";
import { RabbitKit } from "../kit/rabbit.ts";
import { createRng, deriveSeed } from "../kit/rng.ts";
import { ChaosProxy } from "../kit/proxy.ts";
import { amqpHostPort } from "../config.ts";
import { describe } from "../kit/describe.ts";
import { probeBroker } from "../brokers/probe.ts";
import { compileSubmission } from "./compile.ts";
import { describeEnd, HostProcess, type HostSpec } from "./host-process.ts";
import { send, type AbortReason } from "./protocol.ts";
import type { CheckResult, Status } from "./result.ts";
import type { SandboxMode } from "./sandbox.ts";
import { GradingVhost, RabbitLeftovers } from "../brokers/rabbit-admin.ts";
import { KafkaLeftovers } from "../kit/kafka-leftovers.ts";
import { Gateway } from "../kit/gateway.ts";
import type { HostRoutes } from "../kit/host.ts";

export interface ChildConfig {
  exercise: string;
  brokers: Broker[];
  /** The grader, compiled. */
  graderPath: string;
  submissionPath: string;
  seed: number;
  amqpUrl: string;
  kafkaBrokers: string[];
  runId: string;
  tmpRoot: string;
  /** Epoch ms when the engine will SIGKILL this process; checks stop short of it. */
  deadline: number;
  /** The compiled host runtime and what a host may read. */
  hostMain: string;
  labRoot: string;
  nodeModules: string;
  sandbox: SandboxMode;
  memoryMb: number;
  /** The checks to run, by name or 1-based number (all when absent). */
  only: string[] | null;
}

const DEFAULT_CHECK_TIMEOUT_MS = 20_000;
const OUTPUT_LIMIT = 2 * 1024 * 1024;

const config = JSON.parse(process.env.MSGLAB_CHILD_CONFIG ?? "null") as ChildConfig | null;
if (!config) {
  console.error("msglab's grading process must be started by the engine.");
  process.exit(2);
}

// A grader bug must not take the whole grading down unnoticed: it is charged, as an error, to
// the checks running when it happened.
const runningChecks = new Set<{ fault: unknown }>();
const charge = (e: unknown) => {
  for (const c of runningChecks) c.fault ??= e;
};
process.on("uncaughtException", charge);
// A call still waiting when its host was killed rejects with HostGone; nobody need await it.
process.on("unhandledRejection", (e) => {
  if (!(e instanceof HostGone)) charge(e);
});

function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name === "Error" ? "" : e.name + ": "}${e.message}`;
  return describe(e);
}

// ---------------------------------------------------------------------------------------------
// Hosts: one warm spare is started ahead, so a check that needs a host rarely waits for one.

const allHosts = new Set<HostProcess>();
let hostCounter = 0;
let bundle = "";

/**
 * Which check a host serves: it may write that check's shared folder and reach that check's
 * gateway sockets, and nothing of another check's (checks may run at once). "all" is the one
 * learner host a `shareLearnerHost` grader keeps across its (sequential) checks.
 */
type Placement = number | "all";

/** The spare host, and the check it was started for. */
let spare: { proc: HostProcess; check: Placement } | null = null;
/** The check the grading will start next, if any (set by main's lanes). */
let upcomingCheck: () => Placement | null = () => null;

const sharedRoot = (cfg: ChildConfig) => join(cfg.tmpRoot, "shared");
const gatewayRoot = (cfg: ChildConfig) => join(cfg.tmpRoot, "gw");
export const checkShared = (cfg: ChildConfig, i: number) => join(sharedRoot(cfg), `c${i}`);
export const checkGateway = (cfg: ChildConfig, i: number) => join(gatewayRoot(cfg), `c${i}`);

let realModules: string | null = null;
const realNodeModules = (cfg: ChildConfig) => (realModules ??= realpathSync(cfg.nodeModules));

function hostSpec(cfg: ChildConfig, check: Placement, memoryMb = cfg.memoryMb): HostSpec {
  const dir = join(cfg.tmpRoot, "hosts", String(++hostCounter));
  const shared = check === "all" ? sharedRoot(cfg) : checkShared(cfg, check);
  const gw = check === "all" ? gatewayRoot(cfg) : checkGateway(cfg, check);
  mkdirSync(shared, { recursive: true });
  mkdirSync(gw, { recursive: true });
  return {
    bundle,
    hostMain: cfg.hostMain,
    // The gateway's sockets: read-only is enough to connect to a Unix socket.
    // The real path: the compiled code names its libraries by real paths (node_modules may be a link).
    read: [realNodeModules(cfg), join(cfg.hostMain, ".."), join(bundle, ".."), gw],
    labRoot: cfg.labRoot,
    dir,
    shared: [shared],
    // Under bubblewrap a host never has network: brokers are reached through the gateway.
    network: cfg.sandbox === "permission" && cfg.brokers.some((b) => b === "rabbitmq" || b === "kafka"),
    // Loaded while the host warms up, before it is needed: a spare host pays for it, not a check.
    preload: [
      ...(cfg.brokers.includes("sqlite") ? ["better-sqlite3"] : []),
      ...(cfg.brokers.includes("rabbitmq") ? ["amqplib"] : []),
      ...(cfg.brokers.includes("kafka") ? ["kafkajs"] : []),
      ...(cfg.brokers.includes("zeromq") ? ["zeromq"] : []),
    ],
    memoryMb,
    outputLimit: OUTPUT_LIMIT,
    mode: cfg.sandbox,
  };
}

function spawnHost(cfg: ChildConfig, check: Placement, memoryMb?: number, deferLoad = false): HostProcess {
  const h = new HostProcess({ ...hostSpec(cfg, check, memoryMb), deferLoad });
  allHosts.add(h);
  void h.exited.then(() => allHosts.delete(h));
  return h;
}

/** The spare if it was started for this check, else a new host; either way the next check's spare boots. */
function takeHost(cfg: ChildConfig, check: Placement, memoryMb?: number): HostProcess {
  let h: HostProcess;
  if (memoryMb === undefined && spare && spare.check === check && spare.proc.alive) {
    h = spare.proc;
    spare = null;
  } else h = spawnHost(cfg, check, memoryMb);
  warmSpare(cfg);
  return h;
}

/** Starts a host for the next check ahead of time, unless one is waiting already. */
function warmSpare(cfg: ChildConfig, check: Placement | null = upcomingCheck()): void {
  if (check === null) return;
  if (spare && spare.proc.alive && spare.check === check) return;
  // A spare for a check that is past (it never asked for a host) serves nobody now.
  if (spare) void spare.proc.kill();
  spare = { proc: spawnHost(cfg, check), check };
}

function killAllHosts(): Promise<unknown> {
  return Promise.all([...allHosts].map((h) => h.kill()));
}

/** Thrown where the grading would have ended on its own, once an interruption is cleaning up. */
class Interrupting extends Error {}

/** Thrown once the grading has said why it cannot go on: main's caller reaps the hosts and exits. */
class Aborted extends Error {}

function abort(reason: AbortReason, message: string): never {
  // Interrupted meanwhile (its hosts are being killed, which looks like a load failure): the
  // interruption finishes the job, cleanup included.
  if (interrupting) throw new Interrupting();
  send({ type: "abort", reason, message });
  throw new Aborted(message);
}

let shuttingDown = false;

// ---------------------------------------------------------------------------------------------

async function loadSubmission(cfg: ChildConfig, firstPlacement: Placement): Promise<Record<string, string>> {
  const outDir = join(cfg.tmpRoot, "submission");
  mkdirSync(outDir, { recursive: true });
  mkdirSync(join(cfg.tmpRoot, "shared"), { recursive: true });
  bundle = join(outDir, "submission.mjs");
  // The first host boots (Node, the host runtime, the broker libraries) while esbuild compiles.
  const first = spawnHost(cfg, firstPlacement, undefined, true);
  const compiled = await compileSubmission(cfg.submissionPath, bundle);
  if (!compiled.ok) {
    void first.kill();
    if (compiled.kind === "import") abort("load", `Your file imports something the sandbox does not allow: ${compiled.message}`);
    abort("syntax", `Syntax error in your file: ${compiled.message}. Fix it and run again.`);
  }
  first.load();
  try {
    const exports = await first.ready;
    spare = { proc: first, check: firstPlacement };
    return exports;
  } catch (e) {
    const end = e instanceof HostGone ? e.end : null;
    if (end?.kind === "load-failed") {
      abort("load", `Your file threw while it was being loaded: ${errorText(end.error)}. Code at the top level runs on import; move it into the exported functions.`);
    }
    const detail = end ? describeEnd(end, first.tail()) : errorText(e);
    abort("load", `Your file could not be loaded in the sandbox: ${detail}`);
  }
}

function checkExports(exports: Record<string, string>, spec: Record<string, string>): void {
  const problems: string[] = [];
  for (const [name, kind] of Object.entries(spec)) {
    const v = exports[name];
    if (v === undefined || v === "undefined") problems.push(`\`${name}\` is not exported`);
    else if ((kind === "function" || kind === "class") && v !== "function" && v !== "class") problems.push(`\`${name}\` must be a ${kind} but is ${v}`);
    else if (kind === "object" && v !== "object") problems.push(`\`${name}\` must be an object but is ${v}`);
  }
  if (problems.length) {
    abort("missing-export", `Your file does not provide what the grader needs: ${problems.join("; ")}. Keep the exported names from the scaffold (\`export function …\`).`);
  }
}

class CheckTimeout extends LabError {}

/** A module-shaped stand-in: `t.learner.fn(...)` calls the export `fn` in the check's first host. */
function learnerProxy(getHost: () => Promise<Host>): Record<string, (...args: unknown[]) => Promise<unknown>> {
  return new Proxy({} as Record<string, (...args: unknown[]) => Promise<unknown>>, {
    get(_t, prop) {
      if (typeof prop !== "string" || prop === "then") return undefined;
      return async (...args: unknown[]) => (await getHost()).call(prop, ...args);
    },
  });
}

let kafkaCluster: Promise<string[]> | null = null;

/** A check's way out of its hosts: its own gateway (under bubblewrap), closed with the check. */
function routesFor(cfg: ChildConfig, index: number): HostRoutes | null {
  if (cfg.sandbox !== "bwrap") return null;
  const g = new Gateway(checkGateway(cfg, index));
  return {
    gateway: g,
    kafkaBrokers: () =>
      (kafkaCluster ??= (async () => {
        const kit = new KafkaKit(cfg.kafkaBrokers, "msglab-routes");
        try {
          const admin = await kit.admin();
          const { brokers } = await admin.describeCluster();
          return brokers.map((b) => `${b.host}:${b.port}`);
        } catch {
          return [];
        } finally {
          await kit.closeAll();
        }
      })()),
  };
}

/** The grading-wide learner host of a grader with `shareLearnerHost`. */
let sharedLearner: HostProcess | null = null;

async function runCheck<S>(grader: Grader<S>, index: number, cfg: ChildConfig, amqpUrl: string): Promise<CheckResult> {
  const check = grader.checks[index]!;
  const started = performance.now();
  const seed = deriveSeed(cfg.seed, check.name);
  const names = new Namespace(`msglab.${cfg.runId}.c${index}`);
  const rabbit = new RabbitKit(amqpUrl);
  const kafka = new KafkaKit(cfg.kafkaBrokers, `msglab-${cfg.runId}`);
  const tmpDir = join(cfg.tmpRoot, `check-${index}`);
  mkdirSync(tmpDir, { recursive: true });
  const sharedDir = checkShared(cfg, index);
  mkdirSync(sharedDir, { recursive: true });
  const routes = routesFor(cfg, index);
  const deferred: (() => unknown)[] = [];
  const hosts: Host[] = [];
  let firstHost: Promise<Host> | null = null;
  const newHost = async (opts: { memoryMb?: number } = {}): Promise<Host> => {
    const proc = takeHost(cfg, index, opts.memoryMb);
    const host = new Host(proc, hosts.length + 1, routes);
    hosts.push(host);
    await proc.ready;
    return host;
  };
  let sharedEscapedBefore = 0;
  const learnerHost = (): Promise<Host> => {
    if (firstHost) return firstHost;
    if (grader.shareLearnerHost) {
      if (!sharedLearner || !sharedLearner.alive) sharedLearner = takeHost(cfg, "all");
      const proc = sharedLearner;
      sharedEscapedBefore = proc.escaped.length;
      return (firstHost = proc.ready.then(() => new Host(proc, 1, routes)));
    }
    return (firstHost = newHost());
  };
  const ctx: CheckContext<S> = {
    host: newHost,
    learnerHost,
    learner: learnerProxy(learnerHost) as CheckContext<S>["learner"],
    sync: markSync,
    amqpUrl,
    kafkaBrokers: cfg.kafkaBrokers,
    sharedDir,
    async proxy() {
      const proxy = await ChaosProxy.start(amqpHostPort(amqpUrl));
      deferred.push(() => proxy.close());
      return proxy;
    },
    seed,
    rng: createRng(seed),
    names,
    rabbit,
    kafka,
    tmpDir,
    defer: (fn) => void deferred.push(fn),
    fail: (message) => {
      throw new CheckFailure(message);
    },
    async waitFor(condition, opts) {
      const until = Date.now() + opts.timeoutMs;
      for (;;) {
        const v = await condition();
        if (v) return v;
        if (Date.now() > until) throw new CheckFailure(typeof opts.message === "function" ? opts.message() : opts.message);
        await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
      }
    },
    async within(what, ms, value) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CheckFailure(`${what} did not finish within ${ms} ms.`)), ms);
      });
      try {
        return await Promise.race([Promise.resolve(value), timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
  };

  let status: Status = "pass";
  let message: string | null = null;
  let cause: "lab" | "submission" | undefined;
  const fault = { fault: null as unknown };
  runningChecks.add(fault);
  const budget = Math.min(check.timeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS, cfg.deadline - Date.now() - 2500);
  let timer: NodeJS.Timeout | undefined;
  try {
    if (budget <= 0) throw new CheckTimeout("The run's time limit was used up before this check could start.");
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new CheckTimeout(`Timed out after ${budget} ms: your code never finished (an await that never resolves, a busy loop, or a consumer that never calls back).`)),
        budget,
      );
    });
    await Promise.race([check.run(ctx), timeout]);
    const escaped = [...(firstHost && sharedLearner ? sharedLearner.escaped.slice(sharedEscapedBefore) : []), ...hosts.flatMap((h) => h.escaped)];
    if (escaped.length) {
      status = "fail";
      message = `An error escaped your code outside any awaited call: ${errorText(escaped[0])}. Catch it where it is thrown.`;
    } else if (fault.fault) {
      status = "error";
      cause = "lab";
      message = `The grader itself failed (a bug in msglab, please report it): ${errorText(fault.fault)}`;
    }
  } catch (e) {
    if (e instanceof CheckFailure) {
      status = "fail";
      message = e.message;
    } else if (e instanceof HostGone) {
      // The learner's process ended by itself (an exit, a crash, the memory or output cap)
      // while the grader still needed it.
      status = "fail";
      message = e.message;
    } else if (e instanceof CheckTimeout) {
      status = "error";
      cause = "submission";
      message = e.message;
    } else if (isInfrastructureError(e) && !(e instanceof RemoteError)) {
      // Only the grading process's own connections can fail the lab; a connection error that
      // came from the host is the learner's code reaching for a broker on its own.
      status = "error";
      cause = "lab";
      message = e instanceof LabError ? e.message : `A broker went away during the check: ${errorText(e)}. Run \`msglab doctor\`.`;
    } else {
      status = "fail";
      message = `Your code threw: ${errorText(e)}`;
      if (process.env.MSGLAB_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    }
  } finally {
    clearTimeout(timer);
    runningChecks.delete(fault);
  }
  // Hosts die first, so nothing of the learner's is still consuming while queues are deleted.
  // A shared learner host lives on, unless the check failed in a way that may have left it
  // busy (a timeout, a crash): the next check then gets a fresh one.
  if (sharedLearner && status !== "pass") void sharedLearner.kill();
  await within(5000, Promise.all(hosts.map((h) => h.kill()))).catch(() => {});
  await teardown(deferred, rabbit, kafka, names, cfg, amqpUrl);
  await routes?.gateway.close();
  rmSync(checkGateway(cfg, index), { recursive: true, force: true });
  rmSync(tmpDir, { recursive: true, force: true });
  rmSync(sharedDir, { recursive: true, force: true });
  const printed = [...(firstHost && sharedLearner ? [sharedLearner] : []), ...hosts].map((h) => h.tail(12)).filter(Boolean).join("\n");
  return {
    name: check.name,
    status,
    message,
    output: status === "pass" || !printed ? null : printed.slice(-500),
    test_code: `msglab run ${cfg.exercise} --only ${index + 1} --seed ${cfg.seed}`,
    hint: status === "fail" ? check.hint : null,
    durationMs: Math.round(performance.now() - started),
    ...(cause ? { cause } : {}),
  };
}

async function teardown(deferred: (() => unknown)[], rabbit: RabbitKit, kafka: KafkaKit, names: Namespace, cfg: ChildConfig, amqpUrl: string): Promise<void> {
  for (const fn of deferred.reverse()) {
    try {
      await within(2000, fn());
    } catch {
      // Teardown is best effort; the vhost goes at the end, and the engine deletes what is left.
    }
  }
  await within(3000, rabbit.closeAll()).catch(() => {});
  await within(5000, kafka.closeAll()).catch(() => {});
  const released = [
    // In a vhost of its own, the check's queues go with the vhost at the end: no round trip now.
    ...(amqpUrl !== cfg.amqpUrl ? names.created.filter((r) => r.kind === "queue" || r.kind === "exchange").map((r) => r.name) : await within(3000, rabbit.deleteAll(names.created)).catch(() => [] as string[])),
    ...(await within(8000, deleteKafkaResources(cfg.kafkaBrokers, names.created)).catch(() => [] as string[])),
  ];
  for (const r of names.created) if (released.includes(r.name)) send({ type: "released", kind: r.kind, name: r.name });
}

function within<T>(ms: number, value: T | Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    Promise.resolve(value),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("teardown timed out")), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function main(cfg: ChildConfig): Promise<void> {
  for (const broker of cfg.brokers) {
    const problem = await probeBroker(broker, { amqpUrl: cfg.amqpUrl, kafkaBrokers: cfg.kafkaBrokers });
    if (problem) abort("broker", problem);
  }
  let grader: Grader<Record<string, unknown>>;
  try {
    grader = ((await import(pathToFileURL(cfg.graderPath).href)) as { default: Grader<Record<string, unknown>> }).default;
  } catch (e) {
    abort("grader", `The grader for ${cfg.exercise} failed to load (a bug in msglab, please report it): ${errorText(e)}`);
  }
  const selected = cfg.only ? resolveOnly(grader, cfg.only) : grader.checks.map((_, i) => i);
  send({ type: "plan", checks: selected.map((i) => grader.checks[i]!.name) });
  // The spare is always started for the check that comes next (a shared learner host serves all).
  let next = 0;
  upcomingCheck = () => (grader.shareLearnerHost ? (sharedLearner?.alive ? null : "all") : (selected[next] ?? null));
  const exports = await loadSubmission(cfg, grader.shareLearnerHost ? "all" : selected[0]!);
  checkExports(exports, grader.exports);

  // A vhost of its own: whatever the learner's code declares goes when the grading ends.
  let amqpUrl = cfg.amqpUrl;
  let vhost: GradingVhost | null = null;
  if (cfg.brokers.includes("rabbitmq")) {
    vhost = await GradingVhost.create(cfg.amqpUrl, `msglab-${cfg.runId}`);
    if (vhost.name) send({ type: "resource", kind: "vhost", name: vhost.name });
    if (vhost.warning) send({ type: "warning", message: vhost.warning });
    amqpUrl = vhost.url;
  }
  const leftovers = cfg.brokers.includes("kafka") ? await KafkaLeftovers.snapshot(cfg.kafkaBrokers) : null;
  // With network in the host (permission model only), other vhosts are in reach too.
  const rabbitLeftovers = cfg.sandbox === "permission" && cfg.brokers.includes("rabbitmq") ? await RabbitLeftovers.snapshot(cfg.amqpUrl) : null;
  cleanupOnExit = async () => {
    await Promise.allSettled([vhost?.delete(), leftovers?.sweep(`msglab-${cfg.runId}`, `msglab.${cfg.runId}`), rabbitLeftovers?.sweep()]);
  };

  const lanes = grader.shareLearnerHost ? 1 : Math.max(1, Math.min(grader.concurrency ?? 1, selected.length));
  const lane = async () => {
    for (;;) {
      if (interrupting || next >= selected.length) return;
      const k = next++;
      const i = selected[k]!;
      const check = grader.checks[i]!;
      send({ type: "check-start", index: i, name: check.name });
      const result = await runCheck(grader, i, cfg, amqpUrl);
      send({ type: "check-end", index: i, result });
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  if (interrupting) return;
  if (spare) void spare.proc.kill();
  await killAllHosts();
  await within(4000, cleanupOnExit()).catch(() => {});
  if (vhost?.name) send({ type: "released", kind: "vhost", name: vhost.name });
  const warnings = [...(leftovers?.warnings ?? []), ...(rabbitLeftovers?.warnings ?? [])];
  for (const w of warnings) send({ type: "warning", message: w });
  send({ type: "done" });
  process.exit(0);
}

let cleanupOnExit: () => Promise<void> = async () => {};

/** `--only` names or 1-based numbers, as check indexes; a usage error lists the checks. */
function resolveOnly(grader: Grader<unknown>, only: string[]): number[] {
  const names = grader.checks.map((c) => c.name);
  const out: number[] = [];
  for (const raw of only) {
    const v = raw.trim();
    const n = /^\d+$/.test(v) ? Number(v) - 1 : names.indexOf(v);
    if (n < 0 || n >= names.length) {
      const list = names.map((c, i) => `  ${i + 1}. ${c}`).join("\n");
      abort("usage", `--only: this exercise has no check "${v}". Its checks are:\n${list}`);
    }
    if (!out.includes(n)) out.push(n);
  }
  return out.sort((a, b) => a - b);
}

/** Stops at once, cleaning up: the CLI was interrupted, or died (its end of stdin closed). */
let interrupting = false;
async function interrupted(why: string): Promise<void> {
  if (shuttingDown || interrupting) return;
  interrupting = true;
  await killAllHosts();
  await within(1500, cleanupOnExit()).catch(() => {});
  // The CLI may be gone and unable to remove the run's folder: do it here.
  rmSync(config!.tmpRoot, { recursive: true, force: true });
  send({ type: "interrupted", why });
  process.exit(0);
}
process.on("SIGTERM", () => void interrupted("SIGTERM"));
process.on("SIGINT", () => void interrupted("SIGINT"));
process.stdin.on("end", () => void interrupted("the CLI went away"));
process.stdin.on("error", () => void interrupted("the CLI went away"));
process.stdin.resume();
// Belt and braces: if the parent is gone but stdin somehow is not closed.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) void interrupted("the CLI went away");
}, 500).unref();

await main(config).catch(async (e: unknown) => {
  if (e instanceof Aborted) {
    // Every host gone (its whole sandbox, not only bwrap) before this process is.
    shuttingDown = true;
    await within(3000, killAllHosts()).catch(() => {});
    await within(2000, cleanupOnExit()).catch(() => {});
    process.exit(0);
  }
  if (!(e instanceof Interrupting) && !interrupting) throw e;
});
