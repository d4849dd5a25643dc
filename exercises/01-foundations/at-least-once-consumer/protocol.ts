/** What the grader tells its worker (worker.ts), and the names of what the worker reports back. */

/**
 * Where the worker SIGKILLs itself. The points are synchronous inside the learner's code
 * (applyPayment and ack are synchronous), so the worker decides on the spot, from the plan the
 * grader gave it, instead of asking over IPC.
 * - "effect-start":   inside the nth applyPayment call, before it writes anything;
 * - "effect-written": inside the nth applyPayment call, after its ledger row is written and
 *                     before it returns (so before the learner's transaction can commit);
 * - "before-ack":     inside the nth ack call, before the ack is handed to amqplib.
 * Before dying, the worker pushes out what amqplib had queued to send (earlier acks), as if the
 * crash came a moment later: an ack issued before the work has reached the broker by then.
 */
export type KillPoint = "effect-start" | "effect-written" | "before-ack";

export interface WorkerInput {
  amqpUrl: string;
  queue: string;
  dbPath: string;
  /** Which process of the check this is (1, 2, ...), written into each ledger row. */
  run: number;
  /** Wait at a "gate" checkpoint before connecting: the grader starts a restart early and lets it go once the previous process is dead. */
  gate: boolean;
  /** Keep every delivery from the learner's callback (nothing is handled or acked): for the prefetch check. */
  holdDeliveries: boolean;
  kill: { point: KillPoint; nth: number } | null;
  /** Message ids whose first applyPayment call in this process throws (nothing written). */
  failFirstAttempt: string[];
  /**
   * Message ids whose first applyPayment call in this process writes a row that breaks a
   * deferred foreign key: the write succeeds, the COMMIT of the learner's transaction fails (and
   * rolls back). Outside a transaction the write itself fails.
   */
  failCommitOnce: string[];
}

/** Report names the worker sends. */
export const R = {
  started: "started",
  startFailed: "start-failed",
  delivered: "delivered",
  consumeOptions: "consume-options",
  effectCall: "effect-call",
  effectFailed: "effect-failed",
  commitBroken: "commit-broken",
  ack: "ack",
  nack: "nack",
  channelError: "channel-error",
  stopFailed: "stop-failed",
  closed: "closed",
} as const;
