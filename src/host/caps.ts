/**
 * Capabilities: the live objects a grader hands a submission, built here inside the host from
 * plain descriptions, because a connection or a database handle cannot cross a process boundary.
 * The grader picks every address (often its chaos proxy) and every path (inside the host's own
 * folder). What the learner then does with them is observed from outside: on the broker, on the
 * proxy's wire, in the SQLite file.
 */
import { isAbsolute, relative, resolve } from "node:path";

// Libraries load on first use (a host for a SQLite exercise never pays for kafkajs). The
// lab's build rewrites these imports to the lab's own node_modules.
const libs = {
  amqplib: () => import("amqplib"),
  kafkajs: () => import("kafkajs"),
  sqlite: async () => (await import("better-sqlite3")).default,
};

export interface CapContext {
  /** The host's own writable folder: relative paths are resolved here. */
  dir: string;
  /** Every folder the host may write: its own, and the grading's shared one. */
  writable: string[];
  /** Closed when the host exits cleanly (it usually does not: checks end with SIGKILL). */
  closers: (() => unknown)[];
}

type Builder = (opts: Record<string, unknown>, ctx: CapContext) => unknown;

function str(opts: Record<string, unknown>, key: string): string {
  const v = opts[key];
  if (typeof v !== "string") throw new TypeError(`capability option "${key}" must be a string`);
  return v;
}

const quiet = () => {};

const builders: Record<string, Builder> = {
  /** An amqplib connection (ChannelModel) to the URL the grader chose. */
  async "amqp.connection"(opts, ctx) {
    const amqp = await libs.amqplib();
    // Under bubblewrap the host has no network: the grader's gateway gives it a Unix socket
    // that leads where the URL says (src/kit/gateway.ts). amqplib passes `path` to net.connect.
    // noDelay: without it Nagle's algorithm holds the handshake's small frames ~40 ms each.
    const socket = typeof opts.socketPath === "string" ? { path: opts.socketPath, noDelay: true } : { noDelay: true };
    const conn = await amqp.connect(str(opts, "url"), socket);
    // The environment's own connection: a late error on it is not the learner's crash.
    conn.on("error", quiet);
    ctx.closers.push(() => conn.close().catch(quiet));
    return conn;
  },

  /** A channel (optionally a confirm channel) on a fresh connection of its own. */
  async "amqp.channel"(opts, ctx) {
    const conn = (await builders["amqp.connection"]!(opts, ctx)) as import("amqplib").ChannelModel;
    const ch = opts.confirm === true ? await conn.createConfirmChannel() : await conn.createChannel();
    ch.on("error", quiet);
    return ch;
  },

  /** A kafkajs client for the given brokers, with quiet logs and test-friendly timeouts. */
  async "kafka.client"(opts, ctx) {
    const { Kafka, logLevel } = await libs.kafkajs();
    const brokers = opts.brokers;
    if (!Array.isArray(brokers) || brokers.some((b) => typeof b !== "string")) throw new TypeError('capability option "brokers" must be a list of host:port');
    const config = (opts.config ?? {}) as Record<string, unknown>;
    // `via: "host:port"`: every broker connection goes to the grader's proxy instead (a single
    // broker behind it), so the grader sees, holds or cuts each request on the wire.
    // Without network (bubblewrap), `socketMap` names the gateway's Unix socket for each broker
    // address, and `viaPath` the one for `via`.
    const net = await import("node:net");
    const map = (opts.socketMap ?? null) as Record<string, string> | null;
    const viaPath = typeof opts.viaPath === "string" ? opts.viaPath : null;
    if (viaPath || map) {
      config.socketFactory = ({ host, port, onConnect }: { host: string; port: number; onConnect: () => void }) => {
        const path = viaPath ?? map?.[`${host}:${port}`] ?? `${ctx.dir}/no-route-to-${host}-${port}`;
        const socket = net.connect({ path }, onConnect);
        socket.setNoDelay(true);
        return socket;
      };
    } else if (typeof opts.via === "string") {
      const [viaHost, viaPort] = opts.via.split(":") as [string, string];
      config.socketFactory = ({ onConnect }: { onConnect: () => void }) => {
        const socket = net.connect({ host: viaHost, port: Number(viaPort) }, onConnect);
        socket.setNoDelay(true);
        return socket;
      };
    }
    return new Kafka({
      clientId: typeof opts.clientId === "string" ? opts.clientId : "msglab-learner",
      brokers: brokers as string[],
      logLevel: logLevel.NOTHING,
      connectionTimeout: 3000,
      retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 1000 },
      ...config,
    });
  },

  /**
   * A better-sqlite3 database with the pragmas the grader asks for: `path` relative to the host's
   * folder, or absolute inside `t.sharedDir` (so a restarted host, or a second writer, opens the
   * same file).
   */
  async "sqlite.open"(opts, ctx) {
    const Database = await libs.sqlite();
    const path = resolve(ctx.dir, str(opts, "path"));
    const within = (d: string) => {
      const rel = relative(d, path);
      return !rel.startsWith("..") && !isAbsolute(rel);
    };
    if (!ctx.writable.some(within)) throw new Error(`sqlite.open: ${path} is outside the host's folders`);
    const db = new Database(path, opts.readonly === true ? { readonly: true, fileMustExist: true } : {});
    for (const p of (opts.pragmas ?? []) as string[]) db.pragma(p);
    if (typeof opts.exec === "string") db.exec(opts.exec);
    ctx.closers.push(() => db.close());
    return db;
  },

  /**
   * A function whose effect is one SQL write through the learner's own handle (so inside the
   * learner's transaction when they call it in one), with the grader's say before and after:
   * `before(args, { inTransaction })` returns the statement's parameters or throws; `after`
   * runs once the row is written. Both are synchronous calls into the grader, so the grader can
   * SIGKILL the host at either point, exactly.
   */
  "sqlite.effect"(opts) {
    const db = opts.db as import("better-sqlite3").Database;
    const sql = str(opts, "sql");
    const before = opts.before as (args: unknown[], state: { inTransaction: boolean }) => unknown[];
    const after = opts.after as ((args: unknown[]) => void) | undefined;
    if (typeof before !== "function") throw new TypeError('capability option "before" must be a function');
    const stmt = db.prepare(sql);
    return (...args: unknown[]) => {
      const params = before(args, { inTransaction: db.inTransaction });
      stmt.run(...(params as unknown[]));
      after?.(args);
    };
  },

  /**
   * A SQL function on a database the host opened (`db`), whose body is the grader's callback
   * `fn` (mark it `t.sync`): `db.function(name, { varargs: true }, fn)`. Called from a trigger
   * the grader created on its own connection, it puts a grader's say (a crash point) inside a
   * learner's own write: the host is blocked in that statement until the grader answers.
   * `fn`'s return value is the SQL result (undefined becomes NULL).
   */
  "sqlite.function"(opts) {
    const db = opts.db as import("better-sqlite3").Database;
    const fn = opts.fn as (...args: unknown[]) => unknown;
    if (typeof fn !== "function") throw new TypeError('capability option "fn" must be a function');
    db.function(str(opts, "name"), { varargs: true }, (...args: unknown[]) => fn(...args) ?? null);
    return null;
  },

  /** An AbortController: the learner gets `signal`, the grader calls `abort(reason)`. */
  abort() {
    const controller = new AbortController();
    return { signal: controller.signal, abort: (reason: unknown) => controller.abort(reason) };
  },

  /**
   * A remote service as the learner sees one: an object of async methods, each a wrapper over the
   * grader's callback of the same name in `methods` (mark them `t.sync`). A call enters the grader
   * synchronously, so the host is blocked in it until the grader answers (a kill there is exact:
   * the learner's code cannot run past the call), and the learner gets a promise, settled with the
   * callback's value or rejected with what it threw on a later turn of the event loop, as the
   * answer of a real remote call arrives: other work in the host (another call the grader sent
   * meanwhile) runs in between. With `gate` (an async grader callback, called with the method's
   * name right after the call), the promise settles only once the gate has answered: the grader
   * decides when each answer arrives, and so how concurrent calls interleave.
   */
  "async.api"(opts) {
    const methods = opts.methods as Record<string, (...args: unknown[]) => unknown> | null;
    const gate = opts.gate as ((name: string) => Promise<unknown>) | undefined;
    if (typeof methods !== "object" || methods === null) throw new TypeError('capability option "methods" must be an object of functions');
    if (gate !== undefined && typeof gate !== "function") throw new TypeError('capability option "gate" must be a function');
    const api: Record<string, (...args: unknown[]) => Promise<unknown>> = {};
    for (const [name, fn] of Object.entries(methods)) {
      if (typeof fn !== "function") throw new TypeError(`capability option "methods.${name}" must be a function`);
      api[name] = (...args: unknown[]) => {
        let outcome: { ok: boolean; v: unknown };
        try {
          outcome = { ok: true, v: fn(...args) };
        } catch (e) {
          outcome = { ok: false, v: e };
        }
        return new Promise((resolve, reject) => {
          const settle = () => (outcome.ok ? resolve(outcome.v) : reject(outcome.v));
          if (gate) gate(name).then(settle, settle);
          else setImmediate(settle);
        });
      };
    }
    return api;
  },
};

export function buildCap(kind: string, opts: unknown, ctx: CapContext): unknown {
  const b = builders[kind];
  if (!b) throw new Error(`unknown capability "${kind}"`);
  return b((opts ?? {}) as Record<string, unknown>, ctx);
}
