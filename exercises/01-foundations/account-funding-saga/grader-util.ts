// The grader's side of the account-funding-saga exercise. It plays the three services the saga
// calls, and judges only from what it sees itself:
//   - every call into its services (payments, ledger, notifications): synchronous calls behind
//     an async facade (`async.api`), so the learner's process is blocked inside each one until
//     the grader answers, and a SIGKILL there lands exactly at that call, before or after the
//     service's effect;
//   - the services' own books (debits, refunds, credits, reversals, notifications), kept by
//     idempotency key the way a real payment API keeps them;
//   - the saga log's `fundings` table, on the grader's own SQLite connection, at every call and
//     when a funding settles;
//   - what fund() resolves or rejects with (the very error object the service threw).
// The oracle is `model(plan)`: the calls the contract prescribes for a plan, with every call a
// crash interrupted made once more after the restart.
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import Database from "better-sqlite3";
import { CheckFailure, HostGone, describeValue } from "../../../src/kit/index.ts";
import type { CheckContext, Host, Rng } from "../../../src/kit/index.ts";
import type { CreateFundingSaga, FundAccount, Funded } from "../../../src/contracts/account-funding-saga.ts";

export interface Submission {
  createFundingSaga: CreateFundingSaga;
}
export type T = CheckContext<Submission>;

/** A correct fund() makes a handful of calls: milliseconds. Generous for a loaded box. */
export const CALL_MS = 10_000;
/** Attempts a compensation gets (the contract's COMPENSATION_ATTEMPTS). */
export const ATTEMPTS = 3;
const DB_PRAGMAS = ["journal_mode = WAL", "busy_timeout = 5000"];
const TERMINAL = new Set(["completed", "failed", "needs_repair"]);

export type Method = "debit" | "credit" | "send" | "reverse" | "refund";
export type Forward = "debit" | "credit" | "send";
const SERVICE: Record<Method, string> = {
  debit: "payments.debit",
  refund: "payments.refund",
  credit: "ledger.credit",
  reverse: "ledger.reverse",
  send: "notifications.send",
};
export const label = (m: Method): string => SERVICE[m];

/** A failure the grader's service throws: the value fund() must reject with, itself. */
export class ServiceFault extends Error {
  constructor(
    name: string,
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = name;
  }
}

/** What a compensation attempt does: throws having done nothing, or does it and throws anyway (the answer is lost). */
export type Fault = "throw" | "apply-throw";

/** Where a crash lands: at a call of the no-crash call sequence (0-based), before or after its effect; or once fund() has settled. */
export type Kill = { at: number; when: "before" | "after" } | { at: "end" };

export interface Plan {
  cmd: FundAccount;
  /** The forward step whose every answer is a failure. */
  fail?: Forward;
  /** Per compensation, what its attempts 1, 2, … do; attempts past the list succeed. */
  comp?: { reverse?: Fault[]; refund?: Fault[] };
  kills?: Kill[];
}

export interface ModelCall {
  method: Method;
  /** 1, 2, 3 for the attempts of a compensation; 1 otherwise. */
  attempt: number;
  ok: boolean;
  /** Whether the service's effect happens at this call (a compensation attempt may take effect and throw). */
  applies: boolean;
}

export interface Model {
  calls: ModelCall[];
  status: "completed" | "failed" | "needs_repair";
  /** The forward step whose error fund() rejects with. */
  failed?: Forward;
  /** The compensation that gave up (needs_repair). */
  stuck?: Method;
}

/** The calls the contract prescribes for `plan` without a crash. */
export function model(plan: Plan): Model {
  const calls: ModelCall[] = [];
  const done: Forward[] = [];
  for (const step of ["debit", "credit", "send"] as const) {
    calls.push({ method: step, attempt: 1, ok: plan.fail !== step, applies: plan.fail !== step });
    if (plan.fail === step) break;
    done.push(step);
  }
  if (!plan.fail) return { calls, status: "completed" };
  const comps: Method[] = [];
  if (done.includes("credit")) comps.push("reverse");
  if (done.includes("debit")) comps.push("refund");
  for (const c of comps) {
    const faults = (c === "reverse" ? plan.comp?.reverse : plan.comp?.refund) ?? [];
    for (let a = 1; a <= ATTEMPTS; a++) {
      const ok = faults[a - 1] === undefined;
      calls.push({ method: c, attempt: a, ok, applies: ok || faults[a - 1] === "apply-throw" });
      if (ok) break;
      if (a === ATTEMPTS) return { calls, status: "needs_repair", failed: plan.fail, stuck: c };
    }
  }
  return { calls, status: "failed", failed: plan.fail };
}

/** The calls with a crash: a call the crash interrupted is made again by the restarted process. */
export function expectedCalls(plan: Plan): ModelCall[] {
  const m = model(plan).calls;
  const out: ModelCall[] = [];
  m.forEach((c, i) => {
    out.push(c);
    if (plan.kills?.some((k) => k.at === i)) out.push(c);
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Data with the characters naive code breaks on.

const NAMES = [`o'brien`, `"quoted"`, `müller`, `semi;colon`, `a b`, `back\\slash`, `50%_off`];

let fundingSerial = 0;
/** A command of its own: its payment method and account appear in no other funding of the check. */
export function newCommand(rng: Rng): FundAccount {
  const n = ++fundingSerial;
  const tag = rng.int(100, 999);
  return {
    fundingId: `fund:${tag}-${n} ${rng.pick(NAMES)}`,
    paymentId: `pm_${tag}${n}:${rng.pick(NAMES)}`,
    accountId: `acct ${n}/${tag} ${rng.pick(NAMES)}`,
    amount: rng.pick([1, rng.int(2, 99), rng.int(100, 99_999), rng.int(100_000, 5_000_000)]),
  };
}

export function q(s: unknown): string {
  return typeof s === "string" ? JSON.stringify(s) : describeValue(s);
}

export function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return describeValue(e);
}

function isCheckFailure(e: unknown): boolean {
  return e instanceof CheckFailure || (e as Error | null)?.name === "CheckFailure";
}

// ---------------------------------------------------------------------------------------------
// The world of one check: the services, their books, the plans, the log's database.

export interface Call {
  n: number;
  /** Which host made it: 1, 2, … in the order the check started them. */
  proc: number;
  method: Method;
  req: Record<string, unknown>;
  key: unknown;
  /** The funding it belongs to (by its payment method, account, transfer or entry), or null. */
  funding: Funding | null;
  answer: "ok" | "threw" | "killed";
  /** Whether the service's effect happened at this call (a repeat answered from the key does nothing). */
  effect: boolean;
  /** Its place in the funding's no-crash call sequence (a repeat after a crash has the place of the call it repeats). */
  modelIndex: number;
}

export interface Funding {
  plan: Plan;
  /** The funding's calls, in order, across processes. */
  calls: Call[];
  transferId: string;
  entryId: string;
  errors: Partial<Record<Method, ServiceFault[]>>;
  /** The value the first failing forward step threw: what fund() must reject with. */
  original: ServiceFault | null;
  /** How the learner's fund() settled, when it did (not for one a crash interrupted). */
  settled?: { ok: true; value: unknown } | { ok: false; error: unknown };
  /** Problems seen at a call (the log checked from outside). */
  problems: string[];
  judged: boolean;
  /** How many calls it had when it was judged: a call after that came too late. */
  callsWhenJudged: number;
}

/** One process running the learner's saga. */
export interface Proc {
  n: number;
  host: Host;
  saga: { fund(cmd: FundAccount): Promise<Funded>; recover(): Promise<void> };
  /** Set when the grader killed it. */
  killed: boolean;
  /** Its latest call into a service (the gate that follows a call belongs to it). */
  lastCall: Call | null;
}

/** One fund() the grader sent, while the scheduler orders answers. */
interface Run {
  funding: Funding;
  held: { call: Call; release: () => void } | null;
  over: boolean;
}

export class World {
  readonly fundings: Funding[] = [];
  readonly calls: Call[] = [];
  readonly procs: Proc[] = [];
  readonly dbPath: string;
  readonly db: Database.Database;
  /** Grader-side problems (a call no funding owns), raised by the next judgement. */
  readonly strays: string[] = [];
  /** The check's say at every call, after it is recorded and before it is answered (the learner's process is blocked). */
  onCall: ((call: Call) => void) | null = null;
  private readonly byKey = new Map<string, unknown>();
  private serial = 0;
  private faultTurn = 0;
  private readonly faultStart: number;

  constructor(
    readonly t: T,
    file = "saga.db",
  ) {
    this.faultStart = t.rng.int(0, 2);
    this.dbPath = join(t.sharedDir, file);
    this.db = new Database(this.dbPath);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("busy_timeout = 5000");
    t.defer(() => this.db.close());
  }

  add(plan: Plan): Funding {
    const n = this.fundings.length + 1;
    const tag = this.t.rng.int(10, 99);
    const f: Funding = {
      plan,
      calls: [],
      transferId: `tr:${n}-${tag} '${plan.cmd.paymentId.slice(0, 6)}"`,
      entryId: `le/${n}.${tag} "${plan.cmd.accountId.slice(0, 6)}'`,
      errors: {},
      original: null,
      problems: [],
      judged: false,
      callsWhenJudged: 0,
    };
    this.fundings.push(f);
    return f;
  }

  /** The learner's saga in `host`, on this world's database. */
  async open(host: Host): Promise<Proc> {
    const t: T = this.t;
    const proc: Proc = { n: this.procs.length + 1, host, saga: null as unknown as Proc["saga"], killed: false, lastCall: null };
    this.procs.push(proc);
    const api = (methods: Partial<Record<Method, true>>) =>
      host.cap("async.api", {
        methods: Object.fromEntries(Object.keys(methods).map((m) => [m, t.sync((req: unknown) => this.serve(proc, m as Method, req))])),
        gate: () => this.gate(proc),
      });
    const [db, payments, ledger, notifications] = await Promise.all([
      host.cap("sqlite.open", { path: this.dbPath, pragmas: DB_PRAGMAS }),
      api({ debit: true, refund: true }),
      api({ credit: true, reverse: true }),
      api({ send: true }),
    ]);
    const saga = await t.within(
      "createFundingSaga()",
      CALL_MS,
      host.call<Proc["saga"]>("createFundingSaga", {
        db,
        payments,
        ledger,
        notifications,
      }),
    );
    if (typeof saga !== "object" || saga === null || typeof saga.fund !== "function" || typeof saga.recover !== "function") {
      t.fail(`createFundingSaga() returned ${describeValue(saga)}; it must return an object with fund(cmd) and recover().`);
    }
    proc.saga = saga;
    return proc;
  }

  private fundingOf(method: Method, req: Record<string, unknown>): Funding | null {
    // A customer may fund one account twice (one after the other): the one not judged yet is running.
    const by = (pred: (f: Funding) => boolean) => this.fundings.find((f) => !f.judged && pred(f)) ?? this.fundings.find(pred) ?? null;
    switch (method) {
      case "debit":
        return by((f) => f.plan.cmd.paymentId === req.paymentId);
      case "credit":
      case "send":
        return by((f) => f.plan.cmd.accountId === req.accountId);
      case "refund":
        return by((f) => f.transferId === req.transferId);
      case "reverse":
        return by((f) => f.entryId === req.entryId);
    }
  }

  /** Every call into the grader's services lands here, with the learner's process blocked. */
  private serve(proc: Proc, method: Method, raw: unknown): unknown {
    const req = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>;
    const funding = this.fundingOf(method, req);
    const call: Call = { n: ++this.serial, proc: proc.n, method, req, key: req.idempotencyKey, funding, answer: "ok", effect: false, modelIndex: -1 };
    this.calls.push(call);
    proc.lastCall = call;
    if (!funding) {
      const what =
        method === "refund"
          ? `a refund of transfer ${q(req.transferId)}, which no debit returned`
          : method === "reverse"
            ? `a reversal of ledger entry ${q(req.entryId)}, which no credit returned`
            : `a call for ${method === "debit" ? `payment method ${q(req.paymentId)}` : `account ${q(req.accountId)}`}, which no funding of this check has`;
      this.strays.push(`${label(method)}(${describeValue(raw, 200)}) was called: ${what}.`);
      call.answer = "threw";
      throw new ServiceFault("NotFound", `no such ${method === "refund" ? "transfer" : method === "reverse" ? "entry" : "resource"}`, "not_found");
    }
    const before = funding.calls.slice();
    funding.calls.push(call);
    this.observeLog(funding, call);
    this.onCall?.(call);
    const plan = funding.plan;
    const attempt = funding.calls.filter((c) => c.method === method).length;
    // Its place in the no-crash sequence: a call right after a crash repeats the one it interrupted.
    const last = before.at(-1);
    call.modelIndex = last === undefined ? 0 : last.answer === "killed" ? last.modelIndex : last.modelIndex + 1;
    const kill = plan.kills?.find(
      (k): k is Extract<Kill, { when: string }> => "when" in k && k.at === call.modelIndex && !before.some((c) => c.answer === "killed" && c.modelIndex === call.modelIndex),
    );
    const forwardFails = plan.fail === method;
    if (kill?.when === "before") return this.kill(proc, call);
    if (forwardFails) {
      call.answer = "threw";
      const e = this.fault(funding, method);
      funding.original ??= e;
      throw e;
    }
    const faults = method === "reverse" ? plan.comp?.reverse : method === "refund" ? plan.comp?.refund : undefined;
    const fault = faults?.[attempt - 1];
    if (fault === "throw") {
      call.answer = "threw";
      throw this.fault(funding, method);
    }
    const result = this.apply(funding, call);
    if (kill?.when === "after") return this.kill(proc, call);
    if (fault === "apply-throw") {
      call.answer = "threw";
      throw this.fault(funding, method);
    }
    return result;
  }

  /** The service's effect, once per idempotency key: a repeat gets the first answer back and changes nothing. */
  private apply(funding: Funding, call: Call): unknown {
    const k = `${call.method}\0${typeof call.key === "string" ? call.key : describeValue(call.key)}`;
    if (this.byKey.has(k) && typeof call.key === "string") return this.byKey.get(k);
    call.effect = true;
    const result = call.method === "debit" ? funding.transferId : call.method === "credit" ? funding.entryId : undefined;
    // Without a usable key, nothing can be recognized as a repeat: every call takes effect.
    if (typeof call.key === "string" && call.key !== "") this.byKey.set(k, result);
    return result;
  }

  private fault(funding: Funding, method: Method): ServiceFault {
    const n = (funding.errors[method]?.length ?? 0) + 1;
    const e =
      method === "debit"
        ? new ServiceFault("PaymentDeclined", `card declined for ${funding.plan.cmd.paymentId} (grader's fault #${n})`, "card_declined")
        : method === "credit"
          ? new ServiceFault("LedgerRefused", `account ${funding.plan.cmd.accountId} is frozen (grader's fault #${n})`, "account_frozen")
          : method === "send"
            ? new ServiceFault("NotificationBounced", `mailbox of ${funding.plan.cmd.accountId} is full (grader's fault #${n})`, "mailbox_full")
            : this.compensationFault(method, method === "reverse" ? `reversing ${funding.entryId}` : `refunding ${funding.transferId}`, n);
    (funding.errors[method] ??= []).push(e);
    return e;
  }

  /**
   * A failed compensation attempt: a timeout, a 503 or a dropped connection, in turn from a point
   * the seed picks, so that every funding whose compensation fails twice sees two kinds (code that
   * retries only what looks like a timeout gives up too early).
   */
  private compensationFault(method: "reverse" | "refund", doing: string, n: number): ServiceFault {
    const service = method === "reverse" ? "ledger" : "payments";
    const Service = method === "reverse" ? "Ledger" : "Payments";
    const kinds = [
      () => new ServiceFault(`${Service}Timeout`, `${service} timed out ${doing} (grader's fault #${n})`, "timeout"),
      () => new ServiceFault(`${Service}Unavailable`, `${service} answered 503 Service Unavailable ${doing} (grader's fault #${n})`, "unavailable"),
      () => new ServiceFault(`${Service}ConnectionReset`, `connection to ${service} reset ${doing} (grader's fault #${n})`, "ECONNRESET"),
    ];
    return kinds[(this.faultTurn++ + this.faultStart) % kinds.length]!();
  }

  private kill(proc: Proc, call: Call): Promise<undefined> {
    call.answer = "killed";
    proc.killed = true;
    // Answer only once the host is dead: it never runs another instruction.
    return proc.host.kill().then(() => undefined);
  }

  /** The log from outside, at a call: the funding is in it, committed, and not over. */
  private observeLog(funding: Funding, call: Call): void {
    const row = this.row(funding.plan.cmd.fundingId);
    const at = `When your process called ${label(call.method)} for funding ${q(funding.plan.cmd.fundingId)}`;
    if (typeof row === "string") funding.problems.push(`${at}, the grader could not read the fundings table (${row}). Keep a table or view named fundings with columns funding_id, status and last_error in deps.db.`);
    else if (!row) {
      funding.problems.push(
        `${at}, the fundings table (read on the grader's own connection) had no committed row for it. A crash at that moment would leave the ${call.method === "debit" ? "debit" : "call"} with nothing in the log to finish or undo it: insert the funding, with its command, and commit it before the first call.`,
      );
    } else if (TERMINAL.has(String(row.status))) {
      funding.problems.push(`${at}, its row in fundings already said status ${q(row.status)}; a funding is over only after its last call has answered. A crash now would leave this call undone, and recovery would skip it.`);
    }
  }

  /** The funding's row as the grader's connection sees it (committed data only), or the read error. */
  row(id: string): { status: unknown; last_error: unknown } | undefined | string {
    try {
      return this.db.prepare("SELECT status, last_error FROM fundings WHERE funding_id = ?").get(id) as { status: unknown; last_error: unknown } | undefined;
    } catch (e) {
      return errorText(e);
    }
  }

  // -------------------------------------------------------------------------------------------
  // The order in which concurrent answers arrive

  private runs: Run[] | null = null;
  private runsProc: Proc | null = null;
  /** Bumped at every call and every funding that settles while fundings run together. */
  private pumpGen = 0;

  /**
   * Called by the learner's process right after each call, before the call's promise may settle.
   * While fundings run together, an answer is held until every other running fund() is waiting
   * for an answer too (or is over); then the oldest is released. So their calls interleave
   * round-robin, the same way every time: A's debit, B's debit, A's credit, B's credit, …
   */
  private gate(proc: Proc): Promise<void> {
    const call = proc.lastCall;
    const runs = this.runs;
    const run = runs?.find((r) => !r.over && !r.held && r.funding === call?.funding);
    if (!call || !run) return Promise.resolve();
    return new Promise((release) => {
      run.held = { call, release };
      this.pump();
    });
  }

  private pump(): void {
    const runs = this.runs;
    if (!runs) return;
    const gen = ++this.pumpGen;
    const live = runs.filter((r) => !r.over);
    if (!live.some((r) => r.held)) return;
    if (!live.every((r) => r.held)) {
      // A fund() neither over nor waiting for an answer is on its way to its next call, or waits
      // for something of the learner's own (one funding at a time, a queue). Once the process has
      // had a few turns with nothing new (no call, no funding settled), the oldest answer goes.
      this.runsProc?.host.turns().then(
        () => {
          if (gen === this.pumpGen && this.runs === runs) this.releaseOldest(runs);
        },
        () => {},
      );
      return;
    }
    this.releaseOldest(runs);
  }

  private releaseOldest(runs: Run[]): void {
    const held = runs.filter((r) => !r.over && r.held);
    if (!held.length) return;
    const oldest = held.reduce((a, b) => (a.held!.call.n <= b.held!.call.n ? a : b));
    const { release } = oldest.held!;
    oldest.held = null;
    release();
  }

  /** Sends every fund() at once and orders their answers round-robin; resolves when all have settled (or a crash ended them). */
  async together(proc: Proc, fs: Funding[], each: (f: Funding, run: Promise<"settled" | "killed">) => Promise<unknown> = (_f, r) => r): Promise<void> {
    const runs: Run[] = fs.map((funding) => ({ funding, held: null, over: false }));
    this.runs = runs;
    this.runsProc = proc;
    try {
      await Promise.all(
        runs.map((r) =>
          each(r.funding, this.fund(proc, r.funding)).finally(() => {
            r.over = true;
            this.pump();
          }),
        ),
      );
    } finally {
      this.runs = null;
      this.runsProc = null;
      for (const r of runs) r.held?.release();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Driving the learner's saga

  /** fund(cmd) in `proc`; records how it settled; a HostGone from a kill the grader made is a crash. */
  async fund(proc: Proc, f: Funding): Promise<"settled" | "killed"> {
    try {
      const value = await this.t.within(`fund(${q(f.plan.cmd.fundingId)})`, CALL_MS, proc.saga.fund(f.plan.cmd));
      f.settled = { ok: true, value };
    } catch (e) {
      if (isCheckFailure(e)) throw e;
      if (e instanceof HostGone && proc.killed) return "killed";
      if (e instanceof HostGone) throw e;
      f.settled = { ok: false, error: e };
    }
    return "settled";
  }

  /** recover() in `proc`; false when the grader killed it meanwhile. */
  async recover(proc: Proc): Promise<boolean> {
    try {
      await this.t.within(`recover() in process ${proc.n}`, CALL_MS, proc.saga.recover());
      return true;
    } catch (e) {
      if (e instanceof HostGone && proc.killed) return false;
      if (isCheckFailure(e) || e instanceof HostGone) throw e;
      this.t.fail(`recover() in process ${proc.n} rejected with ${errorText(e)}. It must resolve once every unfinished funding is over; a funding that fails is recorded in the log, not thrown.`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Judging

  /** Judges one funding once it is over: calls, arguments, keys, effects, the log, how fund() settled. */
  judge(f: Funding, context: string): void {
    f.judged = true;
    const t: T = this.t;
    const id = q(f.plan.cmd.fundingId);
    const where = `${context}: funding ${id}`;
    f.callsWhenJudged = f.calls.length;
    if (this.strays.length) t.fail(`${context}: ${this.strays[0]}`);
    const m = model(f.plan);
    const want = expectedCalls(f.plan);
    const got = f.calls;
    const shape = (cs: { method: Method }[]) => cs.map((c) => c.method);
    const also = f.problems.length ? ` The grader also saw: ${f.problems[0]}` : "";
    if (!isDeepStrictEqual(shape(got), shape(want))) {
      const s = f.settled;
      const own = s && !s.ok && !Object.values(f.errors).flat().some((e) => Object.is(e, s.error)) ? ` (fund() rejected with ${errorText(s.error)})` : "";
      t.fail(`${where} made these calls: ${callsText(got)}${own}. The contract asks for exactly: ${modelText(want)}.${whyCalls(f, got, want)}${this.misdirected(f, got, want)}${also}`);
    }
    if (f.problems.length) t.fail(`${where}: ${f.problems[0]!}`);
    // Arguments
    const cmd = f.plan.cmd;
    for (const c of got) {
      const r = c.req;
      const bad = (what: string) => t.fail(`${where}: ${label(c.method)} was called with ${describeValue(r, 240)}; ${what}.`);
      if (typeof c.key !== "string" || c.key === "") bad("every call carries an idempotencyKey, a non-empty string");
      if (c.method === "debit" && (r.paymentId !== cmd.paymentId || r.amount !== cmd.amount)) bad(`the debit takes the command's paymentId ${q(cmd.paymentId)} and amount ${cmd.amount}`);
      if (c.method === "credit" && (r.accountId !== cmd.accountId || r.amount !== cmd.amount)) bad(`the credit takes the command's accountId ${q(cmd.accountId)} and amount ${cmd.amount}`);
      if (c.method === "send" && (r.accountId !== cmd.accountId || typeof r.message !== "string" || r.message === "")) bad(`the notification goes to the command's accountId ${q(cmd.accountId)}, with a non-empty message`);
    }
    // Keys: one per call; a repeat carries the first try's key; other fundings never use it.
    const firstKey = new Map<Method, unknown>();
    for (const [i, c] of got.entries()) {
      if (!firstKey.has(c.method)) {
        firstKey.set(c.method, c.key);
        continue;
      }
      if (c.key !== firstKey.get(c.method)) {
        const prev = got.slice(0, i).reverse().find((p) => p.method === c.method)!;
        const why = prev.answer === "killed" ? "the call a crash interrupted (its answer never reached your process)" : `attempt ${got.slice(0, i).filter((p) => p.method === c.method).length} (which threw)`;
        t.fail(
          `${where}: ${label(c.method)} was called again with idempotency key ${q(c.key)}, but ${why} used ${q(firstKey.get(c.method))}. A repeat must carry the same key: the service may have done it already, and only the key lets it answer "done" instead of doing it twice.`,
        );
      }
    }
    for (const other of this.fundings) {
      if (other === f) continue;
      for (const c of other.calls) {
        if (c.key === firstKey.get(c.method) && typeof c.key === "string") {
          t.fail(`${where} and funding ${q(other.plan.cmd.fundingId)} both called ${label(c.method)} with idempotency key ${q(c.key)}. The service takes the second for a repeat of the first and does nothing: keys must differ between fundings (derive them from the funding id).`);
        }
      }
    }
    // Effects: what the services' books hold for this funding.
    const effects = (m2: Method) => got.filter((c) => c.method === m2 && c.effect).length;
    const wantEffects = (m2: Method) => (m.calls.some((c) => c.method === m2 && c.applies) ? 1 : 0);
    for (const m2 of ["debit", "credit", "send", "reverse", "refund"] as const) {
      const n = effects(m2);
      if (n !== wantEffects(m2)) {
        t.fail(`${where}: the ${label(m2)} service's books show it done ${n} time(s); the saga must leave it done ${wantEffects(m2)} time(s). Calls: ${callsText(got)}.`);
      }
    }
    // The log, from outside.
    const row = this.row(cmd.fundingId);
    if (typeof row === "string") t.fail(`${where} is over, but the grader could not read the fundings table (${row}). Keep a table or view named fundings with columns funding_id, status and last_error.`);
    if (!row) t.fail(`${where} is over, but the fundings table (read on the grader's own connection) has no committed row for it.`);
    if (row.status !== m.status) {
      t.fail(`${where} is over (${outcomeText(m)}), and its row in fundings says status ${q(row.status)}; it must say ${q(m.status)}, committed before fund() settles (and after recovery).`);
    }
    if (m.status === "needs_repair") {
      const last = f.errors[m.stuck!]?.at(-1);
      if (typeof row.last_error !== "string" || !last || !row.last_error.includes(last.message)) {
        t.fail(`${where} needs repair: ${label(m.stuck!)} failed ${ATTEMPTS} times. Its row's last_error is ${describeValue(row.last_error)}; it must hold that compensation's last error message, ${q(last?.message)}, so that someone can repair it.`);
      }
    }
    // How fund() settled (not when a crash took the answer away).
    if (f.settled) this.judgeSettled(f, m, where);
  }

  /** A compensation this funding lacks that went to another funding's transfer or entry instead. */
  private misdirected(f: Funding, got: Call[], want: ModelCall[]): string {
    for (const m of ["refund", "reverse"] as const) {
      const lacking = want.filter((c) => c.method === m).length > got.filter((c) => c.method === m).length;
      if (!lacking) continue;
      for (const g of this.fundings) {
        if (g === f) continue;
        const extra = g.calls.filter((c) => c.method === m).length - expectedCalls(g.plan).filter((c) => c.method === m).length;
        if (extra > 0) {
          const what = m === "refund" ? `transfer ${q(g.transferId)}` : `ledger entry ${q(g.entryId)}`;
          return ` Meanwhile ${label(m)} was called for ${what}, which belongs to funding ${q(g.plan.cmd.fundingId)}, running at the same time: compensate the ${m === "refund" ? "transfer" : "entry"} this funding's own ${m === "refund" ? "debit" : "credit"} returned (keep it per funding, in the log).`;
        }
      }
    }
    return "";
  }

  private judgeSettled(f: Funding, m: Model, where: string): void {
    const t: T = this.t;
    const s = f.settled!;
    const cmd = f.plan.cmd;
    if (m.status === "completed") {
      const want: Funded = { fundingId: cmd.fundingId, transferId: f.transferId, entryId: f.entryId };
      if (!s.ok) t.fail(`${where} did everything (${callsText(f.calls)}), yet fund() rejected with ${errorText(s.error)}. It must resolve with ${describeValue(want)}.`);
      if (!isDeepStrictEqual(s.value, want)) t.fail(`${where}: fund() resolved with ${describeValue(s.value, 240)}; it must resolve with ${describeValue(want, 240)} (the ids the debit and the credit returned).`);
      return;
    }
    const original = f.original!;
    if (s.ok) {
      t.fail(`${where}: ${label(m.failed!)} threw ${errorText(original)}, yet fund() resolved with ${describeValue(s.value)}. The caller must learn that the funding failed: after compensating, rethrow the step's error.`);
    }
    if (!Object.is(s.error, original)) {
      const comp = Object.values(f.errors)
        .flat()
        .find((e) => Object.is(e, s.error));
      const what = comp ? `the error of a compensation (${errorText(comp)})` : errorText(s.error);
      t.fail(
        `${where}: fund() rejected with ${what}; it must reject with the error ${label(m.failed!)} threw, itself: ${errorText(original)} (not a wrapper, not a copy${comp ? ", and not a compensation's error: the caller needs to know why the funding failed, the log records the repair" : ""}).`,
      );
    }
  }

  /** Judges every funding not judged yet. */
  judgeAll(context: string): void {
    for (const f of this.fundings) if (!f.judged) this.judge(f, context);
  }

  /**
   * At the end of a check, after the learner's processes have had a few turns: no funding got a
   * call after it was judged (a notification sent "in the background" after fund() settled, a
   * compensation fired and forgotten).
   */
  async noLateCalls(): Promise<void> {
    for (const p of this.procs) if (p.host.alive) await p.host.turns();
    for (const f of this.fundings) {
      if (f.judged && f.calls.length > f.callsWhenJudged) {
        const late = f.calls.slice(f.callsWhenJudged);
        this.t.fail(
          `Funding ${q(f.plan.cmd.fundingId)} was over (fund() had settled, or recover() had resolved) when your process called ${late.map((c) => label(c.method)).join(", ")} for it. Every call of a funding is awaited before fund() settles: a call nobody waits for is one a crash loses, and one whose failure nobody compensates.`,
        );
      }
    }
    if (this.strays.length) this.t.fail(this.strays[0]!);
  }
}

function answerMark(c: Call): string {
  return c.answer === "ok" ? "✓" : c.answer === "threw" ? "✗" : "(crash)";
}

export function callsText(cs: Call[]): string {
  if (!cs.length) return "none";
  let proc = cs[0]!.proc;
  const parts: string[] = [];
  for (const c of cs) {
    if (c.proc !== proc) {
      parts.push(`| process ${c.proc}:`);
      proc = c.proc;
    }
    parts.push(`${c.method} ${answerMark(c)}`);
  }
  return parts.join(", ").replaceAll(", |", " |");
}

export function modelText(cs: ModelCall[]): string {
  return cs.length ? cs.map((c) => `${c.method}${c.ok ? "" : " ✗"}`).join(", ") : "none";
}

function outcomeText(m: Model): string {
  if (m.status === "completed") return "every step succeeded";
  if (m.status === "failed") return `${m.failed} failed, and the compensations succeeded`;
  return `${m.failed} failed, and ${m.stuck} failed ${ATTEMPTS} times`;
}

/** A guess at the cause, only where the observation makes it certain. */
function whyCalls(f: Funding, got: Call[], want: ModelCall[]): string {
  const has = (m: Method) => got.some((c) => c.method === m);
  const wants = (m: Method) => want.some((c) => c.method === m);
  const crashed = got.some((c) => c.answer === "killed");
  const m = model(f.plan);
  if (m.failed === "debit" && has("refund")) return " The debit threw, so there is no money to refund: a step that throws did nothing, so only the steps that succeeded are compensated.";
  if (wants("refund") && !has("refund") && !crashed) return " A failed step must be followed by the compensations of the steps that succeeded before it.";
  if (wants("reverse") && !has("reverse")) return " The credit succeeded before the notification failed: it must be reversed too, then the debit refunded.";
  const iRev = got.findIndex((c) => c.method === "reverse");
  const iRef = got.findIndex((c) => c.method === "refund");
  if (iRev >= 0 && iRef >= 0 && iRef < iRev && !crashed) return " Compensate the latest step first: reverse the credit, then refund the debit.";
  if (m.status === "needs_repair" && has("refund") && !wants("refund")) return ` After ${ATTEMPTS} failed reversals the saga must stop: refunding a debit whose credit is still on the account pays the customer twice.`;
  if (crashed) return " After a crash, the restarted process makes again only the call that was in flight (no answer in the log), then goes on from there; it never repeats a call whose answer the log has, and a funding that was compensating never goes forward again.";
  return "";
}

// ---------------------------------------------------------------------------------------------
// Plans

export function plans(rng: Rng, n: number, extra: Omit<Plan, "cmd"> = {}): Plan[] {
  return Array.from({ length: n }, () => ({ cmd: newCommand(rng), ...extra }));
}
