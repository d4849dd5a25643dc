/**
 * The timers the learner's code leaves pending. Installed just before the learner's module loads,
 * it records every timeout and interval made from then on (through the globals, `node:timers` and
 * `node:timers/promises`), so a grader can ask, once a request has settled, whether the code left
 * work scheduled behind it: a publish "fired and forgotten" on a timer, a relay polling from
 * inside a service. Asking is exact and instant; watching for the late effect would have to wait
 * out the longest delay a learner might choose.
 *
 * A Node `Timeout` knows whether it is still pending (`_destroyed` turns true when it fires or is
 * cleared, by `clearTimeout`, `close()` or anything else), so clears need no wrapping. An unref'd
 * timer counts: it still runs while the process lives.
 */
import { createRequire, syncBuiltinESMExports } from "node:module";

export interface PendingTimer {
  kind: "timeout" | "interval" | "promise";
  /** The delay asked for, in ms. */
  ms: number;
  /** The start of the callback's source, so the learner can tell which timer it is. */
  callback: string;
}

interface Entry extends Omit<PendingTimer, "callback"> {
  /** The callback's source, read only when a grader asks (timers are made on hot paths). */
  callback: () => string;
  pending: () => boolean;
}

const entries = new Set<Entry>();
/** Libraries make timers by the thousand (kafkajs: one per request): forget the finished ones as
 *  the set grows, so it holds no callback (and what it closes over) past its timer. */
let sweepAt = 256;
function remember(e: Entry): void {
  entries.add(e);
  if (entries.size < sweepAt) return;
  for (const x of entries) if (!x.pending()) entries.delete(x);
  sweepAt = Math.max(256, entries.size * 2);
}
const require = createRequire(import.meta.url);

function sourceOf(fn: unknown): string {
  try {
    return typeof fn === "function" ? Function.prototype.toString.call(fn).replace(/\s+/g, " ").slice(0, 100) : "";
  } catch {
    return "";
  }
}

function delayOf(ms: unknown): number {
  const n = Number(ms);
  return Number.isFinite(n) && n >= 1 ? Math.floor(n) : 1;
}

const isDestroyed = (t: unknown) => typeof t === "object" && t !== null && (t as { _destroyed?: boolean })._destroyed === true;

export function watchTimers(): void {
  const timers = require("node:timers") as typeof import("node:timers");
  const promises = require("node:timers/promises") as typeof import("node:timers/promises");
  const realTimeout = globalThis.setTimeout;
  const realInterval = globalThis.setInterval;
  const realPromiseTimeout = promises.setTimeout;

  function wrap(real: typeof setTimeout, kind: "timeout" | "interval"): typeof setTimeout {
    const wrapped = function (this: unknown, fn: unknown, ms?: unknown, ...args: unknown[]) {
      const t = Reflect.apply(real, this, [fn, ms, ...args]) as unknown;
      const e: Entry = { kind, ms: delayOf(ms), callback: () => sourceOf(fn), pending: () => !isDestroyed(t) };
      remember(e);
      return t;
    } as unknown as typeof setTimeout;
    // Keep util.promisify(setTimeout) working as it does on the real one.
    Object.assign(wrapped, real);
    return wrapped;
  }
  const timeout = wrap(realTimeout, "timeout");
  const interval = wrap(realInterval as unknown as typeof setTimeout, "interval") as unknown as typeof setInterval;
  globalThis.setTimeout = timeout;
  globalThis.setInterval = interval;
  timers.setTimeout = timeout;
  timers.setInterval = interval;

  promises.setTimeout = function (this: unknown, ms?: number, ...rest: unknown[]) {
    let settled = false;
    const p = Reflect.apply(realPromiseTimeout, this, [ms, ...rest]) as Promise<unknown>;
    remember({ kind: "promise", ms: delayOf(ms), callback: () => "await setTimeout(…) from node:timers/promises", pending: () => !settled });
    p.then(
      () => (settled = true),
      () => (settled = true),
    );
    return p;
  } as typeof promises.setTimeout;
  // `import { setTimeout } from "node:timers"` in the learner's bundle reads these.
  syncBuiltinESMExports();
}

/** The learner's timers still pending now, longest delay first. */
export function pendingTimers(): PendingTimer[] {
  const out: PendingTimer[] = [];
  for (const e of entries) {
    if (!e.pending()) {
      entries.delete(e);
      continue;
    }
    out.push({ kind: e.kind, ms: e.ms, callback: e.callback() });
  }
  return out.sort((a, b) => b.ms - a.ms);
}
