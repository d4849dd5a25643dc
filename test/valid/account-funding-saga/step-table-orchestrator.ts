// Valid: a generic orchestrator class over a list of step definitions ({ run, undo }); progress lives in a saga_steps table (one row per step: key, answer, done/undone) updated with the funding's status in one transaction; keys are SHA-256 hashes of the funding id and step
import { createHash } from "node:crypto";
import { COMPENSATION_ATTEMPTS, DuplicateFunding } from "msglab/contracts/account-funding-saga";
import type { FundAccount, Funded, FundingSaga, SagaDeps } from "msglab/contracts/account-funding-saga";

interface StepDef {
  name: string;
  run(cmd: FundAccount, answers: Record<string, string>, key: string): Promise<string | undefined>;
  undo?: { name: string; run(answer: string, key: string): Promise<void> };
}

class FundingOrchestrator implements FundingSaga {
  private readonly steps: StepDef[];

  constructor(private readonly deps: SagaDeps) {
    deps.db.exec(`
      CREATE TABLE IF NOT EXISTS fundings (
        funding_id TEXT PRIMARY KEY,
        command    TEXT NOT NULL,
        phase      TEXT NOT NULL DEFAULT 'forward',
        status     TEXT NOT NULL DEFAULT 'in-progress',
        last_error TEXT
      );
      CREATE TABLE IF NOT EXISTS saga_steps (
        funding_id TEXT NOT NULL REFERENCES fundings (funding_id),
        step       TEXT NOT NULL,
        answer     TEXT,
        state      TEXT NOT NULL,   -- 'done' | 'undone'
        PRIMARY KEY (funding_id, step)
      );
    `);
    this.steps = [
      {
        name: "debit",
        run: (c, _a, key) => deps.payments.debit({ paymentId: c.paymentId, amount: c.amount, idempotencyKey: key }),
        undo: { name: "refund", run: (transferId, key) => deps.payments.refund({ transferId, idempotencyKey: key }) },
      },
      {
        name: "credit",
        run: (c, _a, key) => deps.ledger.credit({ accountId: c.accountId, amount: c.amount, idempotencyKey: key }),
        undo: { name: "reverse", run: (entryId, key) => deps.ledger.reverse({ entryId, idempotencyKey: key }) },
      },
      {
        name: "send",
        run: async (c, _a, key) => {
          await deps.notifications.send({ accountId: c.accountId, message: "Funding complete", idempotencyKey: key });
          return undefined;
        },
      },
    ];
  }

  private key(id: string, step: string): string {
    return createHash("sha256").update(id).update("\u0000").update(step).digest("hex");
  }

  private tx(fn: () => void): void {
    const db = this.deps.db;
    db.exec("BEGIN IMMEDIATE");
    try {
      fn();
      db.exec("COMMIT");
    } catch (e) {
      db.exec("ROLLBACK");
      throw e;
    }
  }

  private state(id: string) {
    const db = this.deps.db;
    const f = db.prepare<[string], { command: string; phase: string; status: string }>("SELECT command, phase, status FROM fundings WHERE funding_id = ?").get(id);
    if (!f) return null;
    const rows = db.prepare<[string], { step: string; answer: string | null; state: string }>("SELECT step, answer, state FROM saga_steps WHERE funding_id = ?").all(id);
    return { cmd: JSON.parse(f.command) as FundAccount, phase: f.phase, status: f.status, steps: new Map(rows.map((r) => [r.step, r])) };
  }

  async fund(cmd: FundAccount): Promise<Funded> {
    const s = this.state(cmd.fundingId);
    if (s) {
      if (s.status === "completed") return this.funded(cmd.fundingId, s.steps);
      throw new DuplicateFunding(cmd.fundingId, s.status);
    }
    try {
      this.deps.db.prepare("INSERT INTO fundings (funding_id, command) VALUES (?, ?)").run(cmd.fundingId, JSON.stringify(cmd));
    } catch {
      throw new DuplicateFunding(cmd.fundingId, "in-progress");
    }
    return this.continue(cmd.fundingId);
  }

  private funded(id: string, steps: Map<string, { answer: string | null }>): Funded {
    return { fundingId: id, transferId: steps.get("debit")!.answer!, entryId: steps.get("credit")!.answer! };
  }

  private async continue(id: string, failure?: { error: unknown }): Promise<Funded> {
    const db = this.deps.db;
    let s = this.state(id)!;
    if (s.phase === "forward") {
      for (const step of this.steps) {
        if (s.steps.has(step.name)) continue;
        const answers = Object.fromEntries([...s.steps].map(([k, v]) => [k, v.answer ?? ""]));
        try {
          const answer = await step.run(s.cmd, answers, this.key(id, step.name));
          this.tx(() => {
            db.prepare("INSERT INTO saga_steps (funding_id, step, answer, state) VALUES (?, ?, ?, 'done')").run(id, step.name, answer ?? null);
            if (step === this.steps.at(-1)) db.prepare("UPDATE fundings SET status = 'completed' WHERE funding_id = ?").run(id);
          });
        } catch (e) {
          failure = { error: e };
          db.prepare("UPDATE fundings SET phase = 'backward', last_error = ? WHERE funding_id = ?").run(String((e as Error)?.message ?? e), id);
          break;
        }
        s = this.state(id)!;
      }
      s = this.state(id)!;
      if (s.status === "completed") return this.funded(id, s.steps);
    }
    for (const step of [...this.steps].reverse()) {
      const done = s.steps.get(step.name);
      if (!step.undo || !done || done.state !== "done") continue;
      let last: unknown;
      let ok = false;
      for (let i = 1; i <= COMPENSATION_ATTEMPTS && !ok; i++) {
        try {
          await step.undo.run(done.answer!, this.key(id, step.undo.name));
          ok = true;
        } catch (e) {
          last = e;
        }
      }
      if (!ok) {
        db.prepare("UPDATE fundings SET status = 'needs_repair', last_error = ? WHERE funding_id = ?").run(`${step.undo.name}: ${String((last as Error)?.message ?? last)}`, id);
        throw failure?.error;
      }
      db.prepare("UPDATE saga_steps SET state = 'undone' WHERE funding_id = ? AND step = ?").run(id, step.name);
    }
    db.prepare("UPDATE fundings SET status = 'failed' WHERE funding_id = ?").run(id);
    throw failure?.error;
  }

  async recover(): Promise<void> {
    const open = this.deps.db.prepare<[], { funding_id: string }>("SELECT funding_id FROM fundings WHERE status = 'in-progress'").all();
    for (const { funding_id } of open) await this.continue(funding_id).catch(() => {});
  }
}

export function createFundingSaga(deps: SagaDeps): FundingSaga {
  const saga = new FundingOrchestrator(deps);
  return { fund: (cmd) => saga.fund(cmd), recover: () => saga.recover() };
}
