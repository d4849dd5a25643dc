import { defineGrader } from "../../../src/kit/index.ts";
import { Lab, describeRec, makeSpecs, type Rec, type Run, type Submission, type T } from "./grader-util.ts";

/** The first process: long enough for a slow machine; a correct consumer needs well under a second. */
const FIRST_RUN_MS = 20_000;
/** The restart, once the dead member is out of the group. */
const RESTART_MS = 15_000;
/** Once the consumer has processed everything, how long its last offset commit may take to arrive. */
const LAST_COMMIT_MS = 5_000;
/**
 * How many times applyEffect fails for one message before it succeeds: past any "give up after
 * N attempts" a learner might write (3, 5, 10), since the contract allows no skipping.
 */
const EFFECT_FAILURES = 11;

/** A stream of plain messages on two partitions, ending with one closing message per partition. */
async function plainStream(t: T, restart = false): Promise<Lab> {
  const lab = await Lab.create(t, 2, restart ? 2 : 1);
  await lab.writePlain(makeSpecs(t, t.rng.int(10, 14), lab.partitions));
  await lab.writeClosing();
  return lab;
}

/** Waits until the run has fetched to the end of every partition; fails when it does not in time. */
async function settle(t: T, lab: Lab, run: Run, what: string, ms: number): Promise<void> {
  const result = await lab.settle(run, ms);
  if (result === "timeout") lab.failStuck(run, what, ms);
  if (result === "killed") t.fail("grader bug: a run killed without a planned crash");
}

/** The restart after a crash: a fresh process from the crash image must catch up to the end of every partition. */
async function restartAndJudge(t: T, lab: Lab, first: Run, context: string, crash?: { victim: Rec; lossHint: string }, walBytes?: number): Promise<void> {
  const second = await lab.restart(first, walBytes);
  await settle(t, lab, second, "the restart", RESTART_MS);
  const problem = lab.verdict(second, context, crash);
  if (problem) t.fail(problem);
}

/** "The first process was SIGKILLed <how>; after the restart" */
function crashedContext(how: string): string {
  return `The first process was SIGKILLed ${how}; after the restart`;
}

function bypassed(run: Run): string {
  return `The group's offsets reached the end, but no offset commit of ${run.name} ever went through the kafka client you were given: build your consumer from deps.kafka.`;
}

export default defineGrader<Submission>({
  exports: { startConsumer: "function" },
  checks: [
    {
      name: "without crashes, every message is applied exactly once, though keys and values repeat across messages and offsets repeat across partitions; stop() then disconnects",
      hint: "Identify a record by (topic, partition, offset): neither its key nor its value is unique, and each partition numbers its offsets from 0.",
      timeoutMs: 40_000,
      async run(t) {
        const lab = await plainStream(t);
        const run = await lab.start();
        await settle(t, lab, run, "your consumer started", FIRST_RUN_MS);
        const problem = lab.verdict(run, "With no crash at all");
        if (problem) t.fail(problem);
        await lab.stop(run);
      },
    },
    // Judged by outcome: every commit on the wire against the ledger at that moment. kafkajs's
    // autoCommit as such is not rejected, because it cannot be seen: it commits only offsets whose
    // eachMessage (or eachBatch) has returned, so for a consumer whose transaction completes before
    // eachMessage returns, its commits are the ones a per-batch manual commit would send (the old
    // "auto-commit" mutant, the reference with autoCommit on and no commitOffsets, is equivalent
    // to the each-batch valid alternative on the wire). What autoCommit does wrong shows here when
    // it happens: an effect written after eachMessage returned (mutant auto-commit-buffered).
    {
      name: "offsets are committed by your code, each only after the effects it covers are in the database, and reach the end of every partition",
      hint: "consumer.run({ autoCommit: false, eachMessage }), and in eachMessage: first the SQLite transaction, then await consumer.commitOffsets([{ topic, partition, offset: message.offset + 1 }]). The committed offset is the next record to read.",
      timeoutMs: 40_000,
      async run(t) {
        const lab = await Lab.create(t, 2);
        // A transaction left open while the consumer runs, with plain messages behind it: a
        // read_committed consumer stops at its first record (the last stable offset), below the
        // partition's high watermark. Then it commits (its marker takes an offset of its own).
        await lab.writePlain(makeSpecs(t, t.rng.int(4, 6), lab.partitions));
        const open = await lab.openTransaction(makeSpecs(t, t.rng.int(3, 4), lab.partitions), "commit");
        await lab.writePlain(makeSpecs(t, t.rng.int(2, 3), lab.partitions));
        // Every offset commit is compared with the ledger as it crosses the proxy.
        const run = await lab.start();
        // Until the consumer's commits reach the open transaction on every partition (all it can
        // see), or a commit went past what it had applied; a consumer that commits later is let
        // go on after a while: committing late is not wrong.
        const caughtUp = () => lab.violations.length > 0 || [...open.firstOffsets].every(([p, first]) => (run.committedOnWire.get(p) ?? -1) >= first);
        await lab.until(run, caughtUp, FIRST_RUN_MS / 2);
        await open.end();
        await lab.writePlain(makeSpecs(t, t.rng.int(2, 3), lab.partitions));
        await lab.writeClosing();
        await settle(t, lab, run, "your consumer started", FIRST_RUN_MS);
        const problem = lab.verdict(run, "With no crash at all");
        if (problem) t.fail(problem);
        const reached = await lab.until(run, () => lab.committedAtEnd(), LAST_COMMIT_MS);
        if (reached !== "done") {
          const committed = await lab.committed();
          const [p, end] = [...lab.endOffsets].find(([part, e]) => committed.get(part) !== e)!;
          const got = committed.get(p) ?? -1;
          const why =
            got === -1
              ? "no offset was ever committed for it: a restart would start over from the beginning."
              : got === end - 1
                ? "one short of the end. The committed offset is the NEXT record to read, message.offset + 1: committing message.offset makes every restart read the last processed record again."
                : got < end
                  ? "behind the last message your consumer processed: a restart would read those records again."
                  : "beyond the end of the partition.";
          t.fail(`Every message was applied, but ${LAST_COMMIT_MS / 1000} s after your consumer had fetched to the end, the group's committed offset for partition ${p} was ${got} while the partition ends at ${end}: ${why}`);
        }
        if (run.commits === 0) t.fail(bypassed(run));
      },
    },
    {
      name: "SIGKILL before a message's effect: the restarted consumer applies it (nothing lost)",
      hint: "Nothing about a message may be committed before its effect: neither its offset nor its 'processed' row. Both follow the effect, the row in the same SQLite transaction.",
      timeoutMs: 50_000,
      async run(t) {
        const lab = await plainStream(t, true);
        const victim = lab.pickVictim();
        // Killed inside applyEffect for the victim, before its row is written.
        const first = await lab.start({ arm: (r) => lab.killBeforeEffect(r, victim) });
        const result = await lab.settle(first, FIRST_RUN_MS);
        if (result === "timeout") lab.failStuck(first, "your consumer started", FIRST_RUN_MS);
        if (result === "done") {
          const problem = lab.verdict(first, "With no crash at all");
          t.fail(problem ?? `Your consumer fetched to the end of every partition without ever calling applyEffect for the message at ${describeRec(victim)}.`);
        }
        await restartAndJudge(t, lab, first, crashedContext(`inside applyEffect for the message at ${describeRec(victim)}, before its effect was written`), {
          victim,
          lossHint:
            "The crash came before its effect, so the restart had to process it again: something about it (its offset, or a 'processed' row outside the effect's transaction) was committed before the effect was.",
        });
      },
    },
    {
      name: "SIGKILL after a message's effect committed, before its offset commit reached the broker: the restarted consumer skips it (no double effect)",
      hint: "Kafka redelivers everything after the last committed offset. Before applying a record, look it up in a processed-messages table, inside the same SQLite transaction that writes the effect and the record's row.",
      timeoutMs: 50_000,
      async run(t) {
        const lab = await plainStream(t, true);
        const victim = lab.pickVictim();
        let note: { killedBy: string | null } = { killedBy: null };
        const first = await lab.start({ arm: (r) => (note = lab.killAtCommit(r, victim)) });
        const result = await lab.settle(first, FIRST_RUN_MS);
        if (result === "timeout") lab.failStuck(first, "your consumer started", FIRST_RUN_MS);
        // Fetched to the end: the covering commit may still be on its way (a lazy committer).
        if (result === "done" && (await lab.until(first, () => false, LAST_COMMIT_MS)) !== "killed") {
          const problem = lab.verdict(first, "With no crash at all");
          if (problem) t.fail(problem);
          if (first.commits === 0 && (await lab.committedAtEnd())) t.fail(bypassed(first));
          t.fail(
            `Every message was applied, but no offset commit covering the message at ${describeRec(victim)} went out within ${LAST_COMMIT_MS / 1000} s: your consumer does not commit its offsets, so every restart reprocesses the whole partition. Commit each record's offset (offset + 1) after its transaction.`,
          );
        }
        await restartAndJudge(t, lab, first, crashedContext(`while the offset commit covering the message at ${describeRec(victim)} (${note.killedBy}) was on its way to the broker`));
      },
    },
    {
      name: "SIGKILL right after the transaction with a message's effect commits, before anything else reaches the database or the broker: after the restart its effect exists exactly once",
      hint: "The effect and the record's 'processed' row must commit in ONE SQLite transaction (db.transaction(fn)): a crash between two separate commits leaves an effect without its mark (a double effect on restart) or a mark without its effect (a loss).",
      timeoutMs: 50_000,
      async run(t) {
        const lab = await plainStream(t, true);
        const victim = lab.pickVictim();
        let crash!: ReturnType<Lab["killAfterEffectCommit"]>;
        const first = await lab.start({ arm: (r) => (crash = lab.killAfterEffectCommit(r, victim)) });
        const result = await lab.settle(first, FIRST_RUN_MS);
        if (result === "timeout") lab.failStuck(first, "your consumer started", FIRST_RUN_MS);
        if (result === "done") {
          // Fetched to the end and never killed: the victim's row was never written, or the
          // deadline is still running. Give it its time.
          if (!crash.armed() || (await lab.until(first, () => false, 4000)) !== "killed") {
            const problem = lab.verdict(first, "With no crash at all");
            t.fail(problem ?? `Your consumer fetched to the end of every partition without ever calling applyEffect for the message at ${describeRec(victim)}.`);
          }
        }
        const walBytes = crash.walBytes();
        const how =
          walBytes === undefined
            ? `after applyEffect wrote the effect of the message at ${describeRec(victim)} (its transaction had not committed 3 s later), with no offset commit let through since`
            : `right after the transaction holding the effect of the message at ${describeRec(victim)} committed: nothing your code wrote to the database after that commit, and no offset commit since the effect, survived`;
        await restartAndJudge(t, lab, first, crashedContext(how), { victim, lossHint: "Its 'processed' row was committed while its effect was lost with the crash: the two must commit in one transaction." }, walBytes);
      },
    },
    {
      name: "messages of an aborted transaction are never applied, while the committed messages around them are, once",
      hint: "Consume with read_committed isolation: in kafkajs that is readUncommitted: false (the default) in kafka.consumer({ ... }).",
      timeoutMs: 40_000,
      async run(t) {
        const lab = await Lab.create(t, 2);
        await lab.writePlain(makeSpecs(t, t.rng.int(3, 5), lab.partitions));
        await lab.writeTransaction(makeSpecs(t, t.rng.int(3, 5), lab.partitions, "refund-then-"), "abort");
        await lab.writeTransaction(makeSpecs(t, t.rng.int(2, 4), lab.partitions), "commit");
        await lab.writePlain(makeSpecs(t, t.rng.int(2, 4), lab.partitions));
        await lab.writeClosing();
        const run = await lab.start();
        await settle(t, lab, run, "your consumer started", FIRST_RUN_MS);
        const problem = lab.verdict(run, "With a transaction aborted by its producer in the stream");
        if (problem) t.fail(problem);
      },
    },
    {
      name: "when applyEffect throws, nothing of that message is committed (neither its row nor an offset past it), and it is retried until applied exactly once",
      hint: "Let applyEffect's error propagate: out of the db.transaction function (it rolls back, the 'processed' row with it) and out of eachMessage, without committing the offset. kafkajs then delivers the record again from that offset.",
      timeoutMs: 40_000,
      async run(t) {
        const lab = await plainStream(t);
        // Never the first of its partition: a consumer that rolls back a batch but commits the
        // offsets it resolved before the failure loses the records before the victim.
        const victim = lab.pickVictim({ earlier: true });
        const run = await lab.start({ arm: (r) => lab.failEffect(r, victim, EFFECT_FAILURES) });
        await settle(t, lab, run, "your consumer started", FIRST_RUN_MS);
        const attempts = lab.attemptsOf(victim);
        const early = lab.violations.find((v) => v.rec === victim);
        const lossHint =
          attempts === 0
            ? "applyEffect was never called for it."
            : attempts <= EFFECT_FAILURES
              ? `applyEffect threw for it ${attempts} time${attempts > 1 ? "s" : ""} (the grader's fault; it would have succeeded on call #${EFFECT_FAILURES + 1}), and your consumer went on past it${early ? ", committing an offset beyond it" : ""}. Let the error out of eachMessage: kafkajs then delivers the record again.`
              : "It was retried, yet its effect is not in the ledger.";
        const problem = lab.verdict(run, `With applyEffect failing ${EFFECT_FAILURES} times for the message at ${describeRec(victim)}`, { victim, lossHint });
        if (problem) t.fail(problem);
        if (early) t.fail(early.text);
      },
    },
  ],
});
