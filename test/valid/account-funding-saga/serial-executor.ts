// Valid: a serial executor: fund() logs the funding (and refuses a duplicate) at once, then runs one saga at a time in this process, in a queue; recover() uses the same queue
import { COMPENSATION_ATTEMPTS, DuplicateFunding } from "msglab/contracts/account-funding-saga";
import type { FundAccount, Funded, FundingSaga, SagaDeps } from "msglab/contracts/account-funding-saga";

// The saga log: one row per funding, its command, how far it got, and the answers it needs later.
// status: debiting → crediting → notifying → completed, or → compensating → failed / needs_repair.
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS fundings (
    funding_id  TEXT PRIMARY KEY,
    payment_id  TEXT    NOT NULL,
    account_id  TEXT    NOT NULL,
    amount      INTEGER NOT NULL,
    status      TEXT    NOT NULL,
    transfer_id TEXT,                        -- what debit returned
    entry_id    TEXT,                        -- what credit returned
    reversed    INTEGER NOT NULL DEFAULT 0,  -- the credit's compensation is done
    refunded    INTEGER NOT NULL DEFAULT 0,  -- the debit's compensation is done
    last_error  TEXT
  );
`;

interface Row {
  funding_id: string;
  payment_id: string;
  account_id: string;
  amount: number;
  status: string;
  transfer_id: string | null;
  entry_id: string | null;
  reversed: number;
  refunded: number;
}

const OVER = ["completed", "failed", "needs_repair"];

const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

export function createFundingSaga(deps: SagaDeps): FundingSaga {
  const { db, payments, ledger, notifications } = deps;
  db.exec(SCHEMA);
  const get = db.prepare<[string], Row>("SELECT * FROM fundings WHERE funding_id = ?");
  const insert = db.prepare("INSERT INTO fundings (funding_id, payment_id, account_id, amount, status) VALUES (?, ?, ?, ?, 'debiting')");
  const set = (id: string, fields: Record<string, string | number | null>) => {
    const cols = Object.keys(fields);
    db.prepare(`UPDATE fundings SET ${cols.map((c) => `${c} = ?`).join(", ")} WHERE funding_id = ?`).run(...cols.map((c) => fields[c]!), id);
  };
  // One key per funding and step: a repeat of the call (a retry, a call made again after a crash)
  // carries the same key, and the service answers it without doing it twice.
  const key = (id: string, step: string) => JSON.stringify([id, step]);

  /** Retries a compensation; false once it has failed every attempt (recorded for repair). */
  async function compensate(id: string, what: string, run: () => Promise<void>): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        await run();
        return true;
      } catch (e) {
        if (attempt >= COMPENSATION_ATTEMPTS) {
          set(id, { status: "needs_repair", last_error: `${what}: ${message(e)}` });
          return false;
        }
      }
    }
  }

  /**
   * Drives a funding from whatever its row says to the end. Rejects with the forward step's
   * error when that step failed in this run (`fund()` rethrows it; `recover()` ignores it).
   */
  async function drive(id: string): Promise<Funded> {
    let failure: { error: unknown } | null = null;
    for (;;) {
      const row = get.get(id)!;
      switch (row.status) {
        case "debiting": {
          let transferId: string;
          try {
            transferId = await payments.debit({ paymentId: row.payment_id, amount: row.amount, idempotencyKey: key(id, "debit") });
          } catch (e) {
            // Nothing happened: nothing to undo.
            set(id, { status: "failed", last_error: message(e) });
            throw e;
          }
          set(id, { status: "crediting", transfer_id: transferId });
          break;
        }
        case "crediting": {
          try {
            const entryId = await ledger.credit({ accountId: row.account_id, amount: row.amount, idempotencyKey: key(id, "credit") });
            set(id, { status: "notifying", entry_id: entryId });
          } catch (e) {
            failure = { error: e };
            set(id, { status: "compensating", last_error: message(e) });
          }
          break;
        }
        case "notifying": {
          try {
            await notifications.send({ accountId: row.account_id, message: "Funding complete", idempotencyKey: key(id, "send") });
            set(id, { status: "completed" });
            return { fundingId: id, transferId: row.transfer_id!, entryId: row.entry_id! };
          } catch (e) {
            failure = { error: e };
            set(id, { status: "compensating", last_error: message(e) });
          }
          break;
        }
        case "compensating": {
          // The latest step first: the credit, then the debit.
          if (row.entry_id !== null && !row.reversed) {
            const entryId = row.entry_id;
            if (!(await compensate(id, "reverse", () => ledger.reverse({ entryId, idempotencyKey: key(id, "reverse") })))) throw failure?.error;
            set(id, { reversed: 1 });
          }
          if (row.transfer_id !== null && !row.refunded) {
            const transferId = row.transfer_id;
            if (!(await compensate(id, "refund", () => payments.refund({ transferId, idempotencyKey: key(id, "refund") })))) throw failure?.error;
            set(id, { refunded: 1 });
          }
          set(id, { status: "failed" });
          throw failure?.error;
        }
        default:
          throw new DuplicateFunding(id, row.status);
      }
    }
  }

  // One saga at a time in this process: each funding is logged at once, then waits its turn.
  let queue: Promise<unknown> = Promise.resolve();
  const inTurn = <R>(run: () => Promise<R>): Promise<R> => {
    const p = queue.then(run);
    queue = p.catch(() => {});
    return p;
  };

  return {
    async fund(cmd: FundAccount): Promise<Funded> {
      // The intent, committed before the first call: a crash from here on is recovered. The
      // primary key decides whether this funding id is new, in this process or any other.
      try {
        insert.run(cmd.fundingId, cmd.paymentId, cmd.accountId, cmd.amount);
      } catch (e) {
        if ((e as { code?: string }).code !== "SQLITE_CONSTRAINT_PRIMARYKEY") throw e;
        const row = get.get(cmd.fundingId)!;
        if (row.status === "completed") return { fundingId: row.funding_id, transferId: row.transfer_id!, entryId: row.entry_id! };
        throw new DuplicateFunding(cmd.fundingId, row.status);
      }
      return inTurn(() => drive(cmd.fundingId));
    },

    async recover(): Promise<void> {
      const open = db.prepare<string[], { funding_id: string }>(`SELECT funding_id FROM fundings WHERE status NOT IN (${OVER.map(() => "?").join(", ")})`).all(...OVER);
      for (const { funding_id } of open) {
        try {
          await inTurn(() => drive(funding_id));
        } catch {
          // Recorded in the log; recovery has no caller to tell.
        }
      }
    },
  };
}
