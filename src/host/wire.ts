/**
 * The RPC between a grader and a submission host, used by both ends. It lives on the host's
 * side of the boundary (src/host imports nothing from the kit, the graders or the engine);
 * the trusted side imports it from here.
 *
 * Values cross as tagged JSON. Primitives, arrays, plain objects, Buffers, Errors, Maps and
 * Sets cross by value; functions cross as references that call back into their owner; promises
 * cross as references that settle later. Every object keeps its identity across the boundary:
 * an object sent, and later sent back, arrives as the very object its owner sent. That is what
 * lets a grader check "rejects with the error the operation threw, itself" across processes.
 *
 * The host never decides anything. Whatever it says is what the learner's code did, so a
 * forged message can only claim a behaviour the learner could have had legitimately.
 */
import { StringDecoder } from "node:string_decoder";

export type Wire =
  | null
  | boolean
  | string
  | number
  | { $: "u" }
  | { $: "num"; v: "NaN" | "Infinity" | "-Infinity" | "-0" }
  | { $: "big"; v: string }
  | { $: "buf"; v: string }
  | { $: "date"; v: number }
  | { $: "a"; id: number; v: Wire[] }
  | { $: "o"; id: number; v: [string, Wire][]; cls?: string }
  | { $: "map"; id: number; v: [Wire, Wire][] }
  | { $: "set"; id: number; v: Wire[] }
  | { $: "err"; id: number; name: string; message: string; stack?: string; v: [string, Wire][] }
  | { $: "fn"; id: number; name: string; sync?: true }
  | { $: "p"; id: number }
  /** An AbortSignal: the other side gets a live mirror that aborts when this one does. */
  | { $: "sig"; id: number; aborted: boolean; reason?: Wire }
  /** An object the receiver owns, coming back. */
  | { $: "ref"; id: number }
  /** An object this message already carried (cycles, repeats). */
  | { $: "seen"; id: number }
  | { $: "sym"; v: string };

/** Who a call is addressed to: a function reference, a module export, or a host capability. */
export type Target = { ref: number } | { export: string } | { cap: string } | { builtin: string };

export type Msg =
  | { t: "call"; id: number; to: Target; args: Wire[]; sync?: true }
  | { t: "ret"; id: number; ok: boolean; v: Wire }
  | { t: "settle"; id: number; ok: boolean; v: Wire }
  | { t: "abort"; id: number; reason: Wire }
  /** Grader to host: the bundle is written now; load it (a host started before compiling ends). */
  | { t: "load" }
  /** Host lifecycle and diagnostics (host to grader only). */
  | { t: "ready"; exports: Record<string, string> }
  | { t: "load-failed"; error: Wire; syntax?: boolean }
  | { t: "exit-called"; code: number }
  | { t: "escaped"; error: Wire };

export interface Transport {
  /** Ordered, fire-and-forget. */
  send(msg: Msg): void;
  /** Blocking round trip (host side only): the reply to a sync call. */
  sendSync?(msg: Msg): Msg;
}

const MAX_DEPTH = 40;
const MAX_NODES = 200_000;

/** Thrown when a value cannot cross (too deep, too big): the call fails with this message. */
export class WireError extends Error {
  override name = "WireError";
}

/** An error that came from the other side: same name and message, and its own props. */
export class RemoteError extends Error {}

interface Own {
  value: unknown;
  /** For functions taken off an object: the `this` they are called with. */
  self?: unknown;
}

type Handler = (to: Target, args: unknown[], sync: boolean) => unknown;

/** Functions the other side must call synchronously (it blocks until this side answers). */
const SYNC = new WeakSet<object>();

/**
 * Marks a function to be called synchronously by the other side: the host blocks until the
 * grader answers, so the grader can decide (or SIGKILL the host) at that exact point. Needed
 * where the contract's callback is synchronous (`random()`, `clock.now()`, `applyPayment`).
 */
export function markSync<F extends (...args: never[]) => unknown>(fn: F): F {
  SYNC.add(fn);
  return fn;
}

const isPlainProto = (p: unknown) => p === Object.prototype || p === null;

/**
 * One end of the RPC. `handle` serves calls addressed to exports and capabilities (only the host
 * has those); calls to function references are served here.
 */
export class Peer {
  private nextId = 1;
  /** What this side exposes to the other, by id. */
  private readonly own = new Map<number, Own>();
  private readonly ownIds = new WeakMap<object, number>();
  /** What the other side exposed to this one: the local stand-in for each remote id. */
  private readonly stubs = new Map<number, unknown>();
  private readonly stubIds = new WeakMap<object, number>();
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void; raw: boolean }>();
  /** Mirrors of the other side's AbortSignals, by id. */
  private readonly mirrors = new Map<number, AbortController>();
  private readonly remotePromises = new Map<number, { promise: Promise<unknown>; resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  private closedWith: Error | null = null;

  constructor(
    private readonly transport: Transport,
    private readonly handler: Handler | null,
    /** Odd ids on one side, even on the other, so logs never confuse them. */
    private readonly idBase: 1 | 2,
  ) {
    this.nextId = idBase;
  }

  private id(): number {
    const id = this.nextId;
    this.nextId += 2;
    return id;
  }

  // ------------------------------------------------------------------ encoding

  encode(value: unknown, self?: unknown): Wire {
    const state = { nodes: 0, inMessage: new Set<object>() };
    return this.enc(value, 0, state, self);
  }

  /** Functions taken off an object, by object: the same method of two instances is two references. */
  private readonly boundIds = new WeakMap<object, Map<object, number>>();

  private register(obj: object, self?: unknown): { id: number; fresh: boolean } {
    if (typeof obj === "function" && self !== undefined && self !== null && typeof self === "object") {
      let perSelf = this.boundIds.get(self);
      if (!perSelf) this.boundIds.set(self, (perSelf = new Map()));
      const known = perSelf.get(obj);
      if (known !== undefined) return { id: known, fresh: false };
      const id = this.id();
      perSelf.set(obj, id);
      this.own.set(id, { value: obj, self });
      return { id, fresh: true };
    }
    const known = this.ownIds.get(obj);
    if (known !== undefined) return { id: known, fresh: false };
    const id = this.id();
    this.ownIds.set(obj, id);
    this.own.set(id, self === undefined ? { value: obj } : { value: obj, self });
    return { id, fresh: true };
  }

  private enc(value: unknown, depth: number, state: { nodes: number; inMessage: Set<object> }, self?: unknown): Wire {
    if (++state.nodes > MAX_NODES) throw new WireError(`a value with more than ${MAX_NODES} parts cannot cross to the grader`);
    if (depth > MAX_DEPTH) throw new WireError(`a value nested deeper than ${MAX_DEPTH} levels cannot cross to the grader`);
    switch (typeof value) {
      case "string":
      case "boolean":
        return value;
      case "undefined":
        return { $: "u" };
      case "number":
        if (Number.isNaN(value)) return { $: "num", v: "NaN" };
        if (value === Infinity) return { $: "num", v: "Infinity" };
        if (value === -Infinity) return { $: "num", v: "-Infinity" };
        if (Object.is(value, -0)) return { $: "num", v: "-0" };
        return value;
      case "bigint":
        return { $: "big", v: value.toString() };
      case "symbol":
        return { $: "sym", v: value.description ?? "" };
      case "function": {
        const back = this.stubIds.get(value);
        if (back !== undefined) return { $: "ref", id: back };
        const { id } = this.register(value, self);
        const w: Wire = { $: "fn", id, name: value.name };
        if (SYNC.has(value)) w.sync = true;
        return w;
      }
    }
    if (value === null) return null;
    const obj = value as object;
    const back = this.stubIds.get(obj);
    if (back !== undefined) return { $: "ref", id: back };
    if (state.inMessage.has(obj)) return { $: "seen", id: this.ownIds.get(obj)! };
    if (Buffer.isBuffer(obj) || obj instanceof Uint8Array) return { $: "buf", v: Buffer.from(obj as Uint8Array).toString("base64") };
    if (obj instanceof Date) return { $: "date", v: obj.getTime() };
    if (typeof (obj as { then?: unknown }).then === "function") return this.encPromise(obj as PromiseLike<unknown>);
    if (obj instanceof AbortSignal) return this.encSignal(obj);
    const { id } = this.register(obj);
    state.inMessage.add(obj);
    const next = (v: unknown, s?: unknown) => this.enc(v, depth + 1, state, s);
    if (Array.isArray(obj)) return { $: "a", id, v: obj.map((x) => next(x)) };
    if (obj instanceof Map) return { $: "map", id, v: [...obj].map(([k, v]) => [next(k), next(v)] as [Wire, Wire]) };
    if (obj instanceof Set) return { $: "set", id, v: [...obj].map((x) => next(x)) };
    if (obj instanceof Error) {
      const props: [string, Wire][] = [];
      for (const k of Object.keys(obj)) props.push([k, next((obj as unknown as Record<string, unknown>)[k], obj)]);
      // `cause` is not enumerable when set through the constructor.
      if ("cause" in obj && !Object.keys(obj).includes("cause")) props.push(["cause", next((obj as { cause?: unknown }).cause)]);
      const w: Wire = { $: "err", id, name: String(obj.name), message: String(obj.message), v: props };
      if (typeof obj.stack === "string") w.stack = obj.stack.slice(0, 4000);
      return w;
    }
    const entries: [string, Wire][] = [];
    for (const k of Object.keys(obj)) entries.push([k, next((obj as Record<string, unknown>)[k], obj)]);
    const proto = Object.getPrototypeOf(obj) as object | null;
    if (isPlainProto(proto)) return { $: "o", id, v: entries };
    // A class instance: its methods live on the prototype chain; they go along, bound to it.
    const seen = new Set(Object.keys(obj));
    for (let p = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p) as object | null) {
      for (const k of Object.getOwnPropertyNames(p)) {
        if (k === "constructor" || seen.has(k)) continue;
        const d = Object.getOwnPropertyDescriptor(p, k);
        if (d && typeof d.value === "function") {
          seen.add(k);
          entries.push([k, next(d.value, obj)]);
        }
      }
    }
    const cls = (proto as { constructor?: { name?: unknown } } | null)?.constructor?.name;
    return typeof cls === "string" ? { $: "o", id, v: entries, cls } : { $: "o", id, v: entries };
  }

  private encPromise(p: PromiseLike<unknown>): Wire {
    const { id, fresh } = this.register(p);
    if (fresh) {
      p.then(
        (v) => this.settle(id, true, v),
        (e) => this.settle(id, false, e),
      );
    }
    return { $: "p", id };
  }

  private encSignal(sig: AbortSignal): Wire {
    const { id, fresh } = this.register(sig);
    if (fresh && !sig.aborted) {
      sig.addEventListener("abort", () => this.post({ t: "abort", id, reason: this.encode(sig.reason) }), { once: true });
    }
    return sig.aborted ? { $: "sig", id, aborted: true, reason: this.encode(sig.reason) } : { $: "sig", id, aborted: false };
  }

  private settle(id: number, ok: boolean, v: unknown): void {
    let w: Wire;
    try {
      w = this.encode(v);
    } catch (e) {
      ok = false;
      w = this.encode(new WireError((e as Error).message));
    }
    this.post({ t: "settle", id, ok, v: w });
  }

  // ------------------------------------------------------------------ decoding

  decode(w: Wire): unknown {
    const seen = new Map<number, unknown>();
    return this.dec(w, seen);
  }

  private remember<T extends object>(id: number, obj: T, seen: Map<number, unknown>): T {
    this.stubs.set(id, obj);
    this.stubIds.set(obj, id);
    seen.set(id, obj);
    return obj;
  }

  /** Reuses the stand-in already made for this remote id, so identity holds across messages. */
  private reuse<T extends object>(id: number, make: () => T): T {
    const have = this.stubs.get(id);
    return (have as T | undefined) ?? make();
  }

  private dec(w: Wire, seen: Map<number, unknown>): unknown {
    if (w === null || typeof w !== "object") return w;
    switch (w.$) {
      case "u":
        return undefined;
      case "num":
        return w.v === "NaN" ? NaN : w.v === "Infinity" ? Infinity : w.v === "-Infinity" ? -Infinity : -0;
      case "big":
        return BigInt(w.v);
      case "buf":
        return Buffer.from(w.v, "base64");
      case "date":
        return new Date(w.v);
      case "sym":
        return Symbol(w.v);
      case "ref": {
        const mine = this.own.get(w.id);
        if (!mine) throw new WireError(`reference to unknown object #${w.id}`);
        return mine.value;
      }
      case "seen":
        return seen.get(w.id);
      case "a": {
        const arr = this.reuse(w.id, () => [] as unknown[]);
        this.remember(w.id, arr, seen);
        arr.length = 0;
        for (const x of w.v) arr.push(this.dec(x, seen));
        return arr;
      }
      case "map": {
        const m = this.reuse(w.id, () => new Map<unknown, unknown>());
        this.remember(w.id, m, seen);
        m.clear();
        for (const [k, v] of w.v) m.set(this.dec(k, seen), this.dec(v, seen));
        return m;
      }
      case "set": {
        const s = this.reuse(w.id, () => new Set<unknown>());
        this.remember(w.id, s, seen);
        s.clear();
        for (const x of w.v) s.add(this.dec(x, seen));
        return s;
      }
      case "err": {
        const e = this.reuse(w.id, () => {
          const made = new RemoteError(w.message);
          Object.defineProperty(made, "name", { value: w.name, writable: true, configurable: true, enumerable: false });
          if (w.stack !== undefined) made.stack = w.stack;
          return made;
        });
        this.remember(w.id, e, seen);
        for (const [k, v] of w.v) (e as unknown as Record<string, unknown>)[k] = this.dec(v, seen);
        return e;
      }
      case "o": {
        const o = this.reuse(w.id, () => ({}) as Record<string, unknown>);
        this.remember(w.id, o, seen);
        for (const [k, v] of w.v) o[k] = this.dec(v, seen);
        return o;
      }
      case "fn": {
        const fn = this.reuse(w.id, () => this.stubFunction(w.id, w.name, w.sync === true));
        this.remember(w.id, fn, seen);
        return fn;
      }
      case "sig": {
        let c = this.mirrors.get(w.id);
        if (!c) {
          c = new AbortController();
          this.mirrors.set(w.id, c);
          this.remember(w.id, c.signal, seen);
        }
        if (w.aborted && !c.signal.aborted) c.abort(w.reason === undefined ? undefined : this.dec(w.reason, seen));
        return c.signal;
      }
      case "p": {
        let entry = this.remotePromises.get(w.id);
        if (!entry) {
          let resolve!: (v: unknown) => void;
          let reject!: (e: unknown) => void;
          const promise = new Promise<unknown>((res, rej) => {
            resolve = res;
            reject = rej;
          });
          // A rejection nobody on this side awaits is still the other side's business.
          promise.catch(() => {});
          entry = { promise, resolve, reject };
          this.remotePromises.set(w.id, entry);
          this.remember(w.id, promise, seen);
        }
        return entry.promise;
      }
    }
    throw new WireError(`unknown value tag ${(w as { $: string }).$}`);
  }

  private stubFunction(id: number, name: string, sync: boolean): (...args: unknown[]) => unknown {
    const peer = this;
    const stub = sync
      ? function (this: unknown, ...args: unknown[]) {
          return peer.callSync({ ref: id }, args);
        }
      : function (this: unknown, ...args: unknown[]) {
          return peer.call({ ref: id }, args);
        };
    Object.defineProperty(stub, "name", { value: name || "remote" });
    return stub;
  }

  // ------------------------------------------------------------------ calls

  private post(msg: Msg): void {
    if (this.closedWith) return;
    this.transport.send(msg);
  }

  /**
   * Calls something on the other side; resolves with what it returned (promises followed).
   * With `raw`, resolves at once with `{ value }`, a returned promise left unfollowed, so the
   * caller can watch it settle (or not).
   */
  call(to: Target, args: unknown[], raw = false): Promise<unknown> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.id();
    let wireArgs: Wire[];
    try {
      wireArgs = args.map((a) => this.encode(a));
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, raw });
      this.post({ t: "call", id, to, args: wireArgs });
    });
  }

  /** A blocking call (host side only): the other side answers before anything else runs here. */
  callSync(to: Target, args: unknown[]): unknown {
    if (this.closedWith) throw this.closedWith;
    if (!this.transport.sendSync) throw new WireError("this side cannot make synchronous calls");
    const id = this.id();
    const reply = this.transport.sendSync({ t: "call", id, to, args: args.map((a) => this.encode(a)), sync: true });
    if (reply.t !== "ret") throw new WireError("the grader answered a synchronous call with something else");
    const v = this.decode(reply.v);
    if (!reply.ok) throw v;
    return v;
  }

  /** Feeds one message from the other side. */
  receive(msg: Msg): void {
    switch (msg.t) {
      case "ret": {
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        let v: unknown;
        try {
          v = this.decode(msg.v);
        } catch (e) {
          p.reject(e);
          return;
        }
        if (!msg.ok) p.reject(v);
        else p.resolve(p.raw ? { value: v } : v);
        return;
      }
      case "settle": {
        const entry = this.remotePromises.get(msg.id);
        if (!entry) return;
        let v: unknown;
        try {
          v = this.decode(msg.v);
        } catch (e) {
          entry.reject(e);
          return;
        }
        if (msg.ok) entry.resolve(v);
        else entry.reject(v);
        return;
      }
      case "abort": {
        const c = this.mirrors.get(msg.id);
        if (c && !c.signal.aborted) c.abort(this.decode(msg.reason));
        return;
      }
      case "call":
        void this.serve(msg);
        return;
      default:
        return;
    }
  }

  /** Runs a call addressed to this side and posts its outcome. Sync calls answer the same way. */
  async serve(msg: Extract<Msg, { t: "call" }>, reply: (m: Msg) => void = (m) => this.post(m)): Promise<void> {
    let ok = true;
    let result: unknown;
    try {
      const args = msg.args.map((a) => this.decode(a));
      result = this.invoke(msg.to, args, msg.sync === true);
      // A sync call is answered once its (possibly async) handler is done: the caller is blocked.
      if (msg.sync && result && typeof (result as PromiseLike<unknown>).then === "function") result = await result;
    } catch (e) {
      ok = false;
      result = e;
    }
    let v: Wire;
    try {
      v = this.encode(result);
    } catch (e) {
      ok = false;
      v = this.encode(new WireError((e as Error).message));
    }
    reply({ t: "ret", id: msg.id, ok, v });
  }

  private invoke(to: Target, args: unknown[], sync: boolean): unknown {
    if ("ref" in to) {
      const own = this.own.get(to.ref);
      if (!own || typeof own.value !== "function") throw new WireError(`call to unknown function #${to.ref}`);
      return Reflect.apply(own.value as (...a: unknown[]) => unknown, own.self, args);
    }
    if (!this.handler) throw new WireError("nothing here answers that call");
    return this.handler(to, args, sync);
  }

  /** Rejects every call still waiting: the other side is gone. */
  close(reason: Error): void {
    if (this.closedWith) return;
    this.closedWith = reason;
    for (const p of this.pending.values()) p.reject(reason);
    this.pending.clear();
    for (const p of this.remotePromises.values()) p.reject(reason);
    this.remotePromises.clear();
  }

  get closed(): Error | null {
    return this.closedWith;
  }

  /** The remote id of a stand-in, if it is one (for graders that hand objects back). */
  remoteId(obj: object): number | undefined {
    return this.stubIds.get(obj);
  }
}

/** Splits a byte stream into JSON lines; a line longer than `maxLine` is refused, not buffered. */
export class LineReader {
  private buf = "";
  // A chunk can end inside a multi-byte UTF-8 character (a "ß" in a 1000-message batch, split at
  // the pipe's 64 KiB): the decoder keeps the partial bytes for the next chunk, where decoding
  // each chunk on its own would turn them into U+FFFD and corrupt the learner's data.
  private readonly decoder = new StringDecoder("utf8");
  constructor(
    private readonly onLine: (line: string) => void,
    private readonly maxLine = 16 * 1024 * 1024,
    private readonly onOverflow: () => void = () => {},
  ) {}
  push(chunk: Buffer | string): void {
    this.buf += typeof chunk === "string" ? chunk : this.decoder.write(chunk);
    if (this.buf.length > this.maxLine && this.buf.indexOf("\n") < 0) {
      this.buf = "";
      this.onOverflow();
      return;
    }
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onLine(line);
    }
  }
}
