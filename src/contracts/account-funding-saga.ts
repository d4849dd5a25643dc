/**
 * Contract for the account-funding-saga exercise: fund an account across three services that
 * share no transaction (payments, ledger, notifications), undoing what was done when a step fails,
 * and surviving a crash of the process in the middle.
 *
 * ## The saga
 *
 * Forward steps, in this order, each one only after the previous one succeeded:
 *
 *   1. `payments.debit`      takes the money from the customer's payment method;
 *   2. `ledger.credit`       puts it on the account;
 *   3. `notifications.send`  tells the customer (part of the funding here: when it fails, the
 *                            funding fails).
 *
 * When a step throws, the saga undoes the steps that succeeded, the latest first, and fails:
 *
 * | failed step | compensations, in this order     |
 * |-------------|----------------------------------|
 * | debit       | none (nothing happened)          |
 * | credit      | `payments.refund`                |
 * | send        | `ledger.reverse`, then `payments.refund` |
 *
 * A forward step that throws did nothing (the services answer definitively), and it is not
 * retried. `fund()` then rejects with **the step's error itself**: the very value the service
 * threw, not a wrapper and not a compensation's error.
 *
 * ## A compensation that throws
 *
 * It may or may not have taken effect (a timeout after the service committed is a failure too).
 * Call it again at once, with the same idempotency key, up to {@link COMPENSATION_ATTEMPTS}
 * attempts in all. When the last attempt fails too, stop: make no further compensation (refunding
 * a debit whose credit could not be reversed would pay the customer twice), record the funding as
 * `needs_repair` with the compensation's last error message, and reject with the failed step's
 * original error, as always.
 *
 * ## Idempotency keys
 *
 * Every call carries an `idempotencyKey`. The services remember the first successful answer for
 * each key (per method) and give it back, doing nothing, when the key comes again. So:
 * - a repeat of a call (a compensation attempt, a call made again after a crash) carries the SAME
 *   key as the first try;
 * - two different calls of one method never share a key (two fundings have different keys):
 *   derive it from the funding id and the step, or generate it and store it before the call.
 *
 * ## The saga log, in `deps.db`
 *
 * The process may be SIGKILLed at any moment, in the middle of any call. The log in SQLite is what
 * a new process finds. Its schema is yours, with one part the grader reads on its own connection:
 * a table (or view) named `fundings` with a row per funding `fund()` has started, and the columns
 *
 * | column       | holds |
 * |--------------|-------|
 * | `funding_id` | the command's `fundingId` (unique) |
 * | `status`     | `'completed'`, `'failed'` (everything done was undone) or `'needs_repair'` once the funding is over; any other text while it runs |
 * | `last_error` | for `needs_repair`: the message of the failed compensation's last error |
 *
 * What the log must make possible:
 * - the funding (with its command) is in the log, committed, before the first call (the debit);
 * - the answer of each call is committed before the next call is made;
 * - the final status is committed before `fund()` settles.
 */
import type { Database } from "better-sqlite3";

/** Attempts a compensation gets, the first one included. */
export const COMPENSATION_ATTEMPTS = 3;

/** Fund `accountId` with `amount` cents taken from `paymentId`. */
export interface FundAccount {
  /** The saga's id: one funding, one id. Any non-empty string (quotes and spaces included). */
  fundingId: string;
  /** The customer's payment method to debit. */
  paymentId: string;
  /** The account to credit. */
  accountId: string;
  /** In cents: a positive integer. */
  amount: number;
}

/** What a completed funding resolves with: the ids the services returned. */
export interface Funded {
  fundingId: string;
  /** What `payments.debit` returned. */
  transferId: string;
  /** What `ledger.credit` returned. */
  entryId: string;
}

export interface Payments {
  /** Debits the payment method; resolves with the transfer's id. */
  debit(req: { paymentId: string; amount: number; idempotencyKey: string }): Promise<string>;
  /** Gives a debited transfer's money back (the whole transfer). */
  refund(req: { transferId: string; idempotencyKey: string }): Promise<void>;
}

export interface Ledger {
  /** Credits the account; resolves with the ledger entry's id. */
  credit(req: { accountId: string; amount: number; idempotencyKey: string }): Promise<string>;
  /** Cancels a credit with a reversing entry. */
  reverse(req: { entryId: string; idempotencyKey: string }): Promise<void>;
}

export interface Notifications {
  /** Tells the account's owner; `message` is yours ("Funding complete"). */
  send(req: { accountId: string; message: string; idempotencyKey: string }): Promise<void>;
}

export interface SagaDeps {
  /** The saga log's database (better-sqlite3; WAL, with a busy timeout). A restarted process gets the same file. */
  db: Database;
  payments: Payments;
  ledger: Ledger;
  notifications: Notifications;
}

export interface FundingSaga {
  /**
   * Runs the saga for `cmd` and resolves with the ids of the debit and the credit, or undoes
   * what it did and rejects with the failed step's own error (see the module doc).
   *
   * A `fundingId` the log already has is not run again, and no service is called: a completed
   * funding resolves with the same {@link Funded} as the first time; one that failed, needs repair,
   * or is still running (in this process or another) rejects with a {@link DuplicateFunding}.
   */
  fund(cmd: FundAccount): Promise<Funded>;
  /**
   * Called in a new process after a crash, before any `fund()`: finishes every funding of the log
   * that is not over, as if `fund()` had never stopped.
   * - The call that was in flight when the process died (the log has no answer for it) is made
   *   again, with the same idempotency key; then the saga goes on: the next steps, or, when a step
   *   fails, the compensations.
   * - No call whose answer the log has is made again.
   * - A funding that was compensating goes on compensating (it never goes forward again).
   * - A funding that is over (`completed`, `failed`, `needs_repair`) is left alone: no call.
   * It resolves once every funding is over. A funding that fails is recorded in the log, not
   * thrown: recovery has no caller to tell.
   */
  recover(): Promise<void>;
}

/** The entry point the grader calls, once per process. */
export type CreateFundingSaga = (deps: SagaDeps) => FundingSaga;

/** `fund()` of a funding id that already ran (or is running). Recognized by its `name`. */
export class DuplicateFunding extends Error {
  override name = "DuplicateFunding";
  constructor(
    readonly fundingId: string,
    readonly status: string,
  ) {
    super(`funding ${JSON.stringify(fundingId)} already ran (status ${status})`);
  }
}
