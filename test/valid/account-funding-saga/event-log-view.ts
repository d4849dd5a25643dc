// Valid: an append-only event log (saga_events) is the saga's state; `fundings` is a VIEW over it; idempotency keys are random UUIDs written to the log before each call instead of derived from the funding id
import { randomUUID } from "node:crypto";
import { COMPENSATION_ATTEMPTS, DuplicateFunding } from "msglab/contracts/account-funding-saga";
import type { FundAccount, Funded, FundingSaga, SagaDeps } from "msglab/contracts/account-funding-saga";

// Every fact is one row: started (the command), called (a key, before the call), answered (after),
// failed (a forward step threw), compensated (one compensation done), over (the final status).
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS saga_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    funding_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    step       TEXT,
    data       TEXT
  );
  CREATE UNIQUE INDEX IF NOT EXISTS saga_started ON saga_events (funding_id) WHERE kind = 'started';
  CREATE VIEW IF NOT EXISTS fundings AS
    SELECT s.funding_id,
           COALESCE((SELECT o.step FROM saga_events o WHERE o.funding_id = s.funding_id AND o.kind = 'over' ORDER BY o.seq DESC LIMIT 1), 'running') AS status,
           (SELECT json_extract(o.data, '$') FROM saga_events o WHERE o.funding_id = s.funding_id AND o.kind = 'over' ORDER BY o.seq DESC LIMIT 1) AS last_error
    FROM saga_events s WHERE s.kind = 'started';
`;

type Step = "debit" | "credit" | "send" | "reverse" | "refund";

interface State {
  cmd: FundAccount;
  keys: Map<Step, string>;
  answers: Map<Step, unknown>;
  failed: boolean;
  compensated: Set<Step>;
  over: string | null;
}

export function createFundingSaga(deps: SagaDeps): FundingSaga {
  const { db } = deps;
  db.exec(SCHEMA);
  const append = db.prepare("INSERT INTO saga_events (funding_id, kind, step, data) VALUES (?, ?, ?, ?)");
  const events = db.prepare<[string], { kind: string; step: string | null; data: string | null }>("SELECT kind, step, data FROM saga_events WHERE funding_id = ? ORDER BY seq");
  const log = (id: string, kind: string, step: string | null = null, data: unknown = null) => append.run(id, kind, step, data === null ? null : JSON.stringify(data));

  function load(id: string): State | null {
    let st: State | null = null;
    for (const e of events.all(id)) {
      const data = e.data === null ? null : JSON.parse(e.data);
      if (e.kind === "started") st = { cmd: data, keys: new Map(), answers: new Map(), failed: false, compensated: new Set(), over: null };
      else if (!st) continue;
      else if (e.kind === "called") st.keys.set(e.step as Step, data);
      else if (e.kind === "answered") st.answers.set(e.step as Step, data);
      else if (e.kind === "failed") st.failed = true;
      else if (e.kind === "compensated") st.compensated.add(e.step as Step);
      else if (e.kind === "over") st.over = e.step;
    }
    return st;
  }

  /** The key of a step: the one already in the log (a repeat), or a new one, logged before the call. */
  function keyOf(id: string, st: State, step: Step): string {
    let k = st.keys.get(step);
    if (!k) {
      k = randomUUID();
      log(id, "called", step, k);
      st.keys.set(step, k);
    }
    return k;
  }

  const errText = (e: unknown) => (e instanceof Error ? e.message : String(e));

  async function run(id: string): Promise<Funded> {
    const st = load(id)!;
    const { cmd } = st;
    let error: unknown;
    if (!st.failed) {
      try {
        if (!st.answers.has("debit")) {
          let transfer: string;
          try {
            transfer = await deps.payments.debit({ paymentId: cmd.paymentId, amount: cmd.amount, idempotencyKey: keyOf(id, st, "debit") });
          } catch (e) {
            log(id, "failed", "debit");
            log(id, "over", "failed", errText(e));
            throw e;
          }
          log(id, "answered", "debit", transfer);
          st.answers.set("debit", transfer);
        }
        if (!st.answers.has("credit")) {
          const entry = await deps.ledger.credit({ accountId: cmd.accountId, amount: cmd.amount, idempotencyKey: keyOf(id, st, "credit") });
          log(id, "answered", "credit", entry);
          st.answers.set("credit", entry);
        }
        await deps.notifications.send({ accountId: cmd.accountId, message: `Your account was funded with ${cmd.amount} cents`, idempotencyKey: keyOf(id, st, "send") });
        log(id, "over", "completed");
        return { fundingId: id, transferId: st.answers.get("debit") as string, entryId: st.answers.get("credit") as string };
      } catch (e) {
        if (!st.answers.has("debit")) throw e; // the debit failed: nothing to undo, already over
        log(id, "failed", null);
        error = e;
      }
    }
    const undo: [Step, () => Promise<void>][] = [];
    if (st.answers.has("credit")) undo.push(["reverse", () => deps.ledger.reverse({ entryId: st.answers.get("credit") as string, idempotencyKey: keyOf(id, st, "reverse") })]);
    undo.push(["refund", () => deps.payments.refund({ transferId: st.answers.get("debit") as string, idempotencyKey: keyOf(id, st, "refund") })]);
    for (const [step, call] of undo) {
      if (st.compensated.has(step)) continue;
      let last: unknown;
      let done = false;
      for (let i = 0; i < COMPENSATION_ATTEMPTS && !done; i++) {
        try {
          await call();
          done = true;
        } catch (e) {
          last = e;
        }
      }
      if (!done) {
        log(id, "over", "needs_repair", `${step} gave up: ${errText(last)}`);
        throw error;
      }
      log(id, "compensated", step);
    }
    log(id, "over", "failed", error === undefined ? null : errText(error));
    throw error;
  }

  return {
    async fund(cmd) {
      const st = load(cmd.fundingId);
      if (st) {
        if (st.over === "completed") return { fundingId: cmd.fundingId, transferId: st.answers.get("debit") as string, entryId: st.answers.get("credit") as string };
        throw new DuplicateFunding(cmd.fundingId, st.over ?? "running");
      }
      try {
        log(cmd.fundingId, "started", null, { fundingId: cmd.fundingId, paymentId: cmd.paymentId, accountId: cmd.accountId, amount: cmd.amount });
      } catch {
        throw new DuplicateFunding(cmd.fundingId, "running");
      }
      return run(cmd.fundingId);
    },
    async recover() {
      const open = db.prepare<[], { funding_id: string }>("SELECT funding_id FROM fundings WHERE status = 'running'").all();
      await Promise.all(open.map(({ funding_id }) => run(funding_id).catch(() => undefined)));
    },
  };
}
