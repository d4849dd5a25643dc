import { defineGrader } from "../../../src/kit/index.ts";
import { Lab, describeRec, makeSpecs, type CrashNote, type Run, type Submission, type T } from "./grader-util.ts";

/** The first process: long enough for a slow machine; a correct consumer needs about a second. */
const FIRST_RUN_MS = 20_000;
/** The restart, once the dead member is out of the group. */
const RESTART_MS = 15_000;
/** Once everything is applied, how long the last offset commit may take to arrive. */
const LAST_COMMIT_MS = 8_000;

/** A stream of plain messages on two partitions, ending with one closing message per partition. */
async function plainStream(t: T): Promise<Lab> {
  const lab = await Lab.create(t, 2);
  await lab.writePlain(makeSpecs(t, t.rng.int(10, 14), lab.partitions));
  await lab.writeClosing();
  return lab;
}

/** Stops the run cleanly, then fails with the ledger's first problem, if any. */
async function stopAndJudge(t: T, lab: Lab, run: Run, context: string, crash?: CrashNote): Promise<void> {
  await run.stop();
  const problem = lab.verdict(context, crash);
  if (problem) t.fail(problem);
}

/** Fails when a run did not catch up in time, saying what it got stuck on. */
function failStuck(t: T, lab: Lab, run: Run, what: string, ms: number): never {
  const problem = lab.verdict(`${ms / 1000} s after ${what}`);
  const stuck = lab.stuck(run);
  t.fail(`${problem ?? `${ms / 1000} s after ${what}, your consumer had not processed every partition to its end.`}${stuck ? ` ${stuck}` : ""}`);
}

/**
 * The restart after a crash: the dead member leaves the group, a fresh process with the same
 * group resumes from the committed offsets and must catch up to the end of every partition.
 */
async function restart(t: T, lab: Lab, second: Run, crashed: string): Promise<Run> {
  await lab.evictDeadMembers();
  second.begin();
  const result = await lab.settle(second, RESTART_MS);
  if (result === "timeout") failStuck(t, lab, second, `the restart (${crashed})`, RESTART_MS);
  if (result === "crashed") t.fail("The restarted process died."); // only planned crashes kill; none is planned here
  return second;
}

/** "The first process was SIGKILLed <how>; after the restart" */
function crashedContext(how: string): string {
  return `The first process was SIGKILLed ${how}; after the restart`;
}

export default defineGrader<Submission>({
  exports: { startConsumer: "function" },
  checks: [
    {
      name: "without crashes, every message is applied exactly once, though keys and values repeat across messages and offsets repeat across partitions",
      hint: "Identify a record by (topic, partition, offset): neither its key nor its value is unique, and each partition numbers its offsets from 0.",
      timeoutMs: 40_000,
      async run(t) {
        const lab = await plainStream(t);
        const run = await lab.start(1);
        const result = await lab.settle(run, FIRST_RUN_MS);
        if (result === "timeout") failStuck(t, lab, run, "your consumer started", FIRST_RUN_MS);
        await stopAndJudge(t, lab, run, "With no crash at all");
      },
    },
    {
      name: "offsets are committed by your code (autoCommit off), each only after the effects it covers are in the database, and reach the end of every partition",
      hint: "consumer.run({ autoCommit: false, eachMessage }), and in eachMessage: first the SQLite transaction, then await consumer.commitOffsets([{ topic, partition, offset: message.offset + 1 }]). The committed offset is the next record to read.",
      timeoutMs: 40_000,
      async run(t) {
        const lab = await Lab.create(t, 2);
        // A committed transaction in the middle: its commit markers take offsets of their own.
        await lab.writePlain(makeSpecs(t, t.rng.int(4, 6), lab.partitions));
        await lab.writeTransaction(makeSpecs(t, t.rng.int(3, 4), lab.partitions), "commit");
        await lab.writePlain(makeSpecs(t, t.rng.int(3, 5), lab.partitions));
        await lab.writeClosing();
        const run = await lab.start(1);
        // Every offset commit is held and compared with the ledger before it reaches the broker.
        const result = await lab.settle(run, FIRST_RUN_MS);
        if (result === "timeout") failStuck(t, lab, run, "your consumer started", FIRST_RUN_MS);
        const problem = lab.verdict("With no crash at all");
        if (problem) t.fail(problem);
        if (run.runConfig?.autoCommit) {
          t.fail(
            "Your consumer runs with kafkajs's autoCommit on (the default): kafkajs then commits offsets by itself, on its own schedule, and the commit is no longer tied to your SQLite transaction. Pass autoCommit: false to consumer.run() and commit each offset yourself, after the transaction.",
          );
        }
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
          t.fail(`Every message was applied, but ${LAST_COMMIT_MS / 1000} s later the group's committed offset for partition ${p} was ${got} while the partition ends at ${end}: ${why}`);
        }
        if (run.commits === 0) {
          t.fail("The group's offsets reached the end, but no offset commit ever went through the kafka client you were given: build your consumer from deps.kafka.");
        }
        await run.stop();
      },
    },
    {
      name: "SIGKILL before a message's effect: the restarted consumer applies it (nothing lost)",
      hint: "Nothing about a message may be committed before its effect: neither its offset nor its 'processed' row. Both follow the effect, the row in the same SQLite transaction.",
      timeoutMs: 50_000,
      async run(t) {
        const lab = await plainStream(t);
        const victim = lab.pickVictim();
        // The restart's process is spawned ahead of time and held until the first one died.
        const [first, second] = await Promise.all([
          lab.start(1, { crash: { point: "before-effect", partition: victim.partition, offset: String(victim.offset) } }),
          lab.start(2, { held: true }),
        ]);
        const result = await lab.settle(first, FIRST_RUN_MS);
        if (result === "timeout") failStuck(t, lab, first, "your consumer started", FIRST_RUN_MS);
        if (result === "done") {
          // applyEffect was never called for the victim, so the crash never came.
          await stopAndJudge(t, lab, first, "With no crash at all");
          t.fail(`Your consumer never called applyEffect for the message at ${describeRec(victim)}.`);
        }
        await restart(t, lab, second, "SIGKILL before the effect");
        await stopAndJudge(
          t,
          lab,
          second,
          crashedContext(`right before the effect of the message at ${describeRec(victim)}`),
          {
            victim,
            lossHint:
              "The crash came before its effect, so the restart had to process it again: something about it (its offset, or a 'processed' row outside the effect's transaction) was committed before the effect was.",
          },
        );
      },
    },
    {
      name: "SIGKILL after a message's effect committed, before its offset commit reached the broker: the restarted consumer skips it (no double effect)",
      hint: "Kafka redelivers everything after the last committed offset. Before applying a record, look it up in a processed-messages table, inside the same SQLite transaction that writes the effect and the record's row.",
      timeoutMs: 50_000,
      async run(t) {
        const lab = await plainStream(t);
        const victim = lab.pickVictim();
        const [first, second] = await Promise.all([lab.start(1, { killAtCommit: victim }), lab.start(2, { held: true })]);
        let appliedAt = 0;
        const result = await lab.until(
          first,
          async () => {
            const all = lab.allApplied();
            if (!appliedAt && all) appliedAt = Date.now();
            if (first.idle && !all) return true; // nothing left to read, yet messages are missing
            return (appliedAt > 0 && Date.now() - appliedAt > LAST_COMMIT_MS) || (await lab.committedAtEnd());
          },
          FIRST_RUN_MS + LAST_COMMIT_MS,
        );
        if (result === "timeout") failStuck(t, lab, first, "your consumer started", FIRST_RUN_MS + LAST_COMMIT_MS);
        if (result === "done") {
          await stopAndJudge(t, lab, first, "With no crash at all");
          if (first.commits === 0 && (await lab.committedAtEnd())) {
            t.fail("The group's offsets reached the end, but no offset commit ever went through the kafka client you were given: build your consumer from deps.kafka.");
          }
          t.fail(
            `Every message was applied, but no offset commit covering the message at ${describeRec(victim)} went out within ${LAST_COMMIT_MS / 1000} s: your consumer does not commit its offsets, so every restart reprocesses the whole partition. Commit each record's offset (offset + 1) after its transaction.`,
          );
        }
        await restart(t, lab, second, "SIGKILL at the offset commit");
        await stopAndJudge(t, lab, second, crashedContext(`while the offset commit covering the message at ${describeRec(victim)} was on its way to the broker (its effect was already committed)`));
      },
    },
    {
      name: "SIGKILL right after a message's effect, before anything else reaches the database: after the restart its effect exists exactly once",
      hint: "The effect and the record's 'processed' row must commit in ONE SQLite transaction (db.transaction(fn)): a crash between two separate commits leaves an effect without its mark (a double effect on restart) or a mark without its effect (a loss).",
      timeoutMs: 50_000,
      async run(t) {
        const lab = await plainStream(t);
        const victim = lab.pickVictim();
        const [first, second] = await Promise.all([
          lab.start(1, { crash: { point: "after-effect", partition: victim.partition, offset: String(victim.offset) } }),
          lab.start(2, { held: true }),
        ]);
        const result = await lab.settle(first, FIRST_RUN_MS);
        if (result === "timeout") failStuck(t, lab, first, "your consumer started", FIRST_RUN_MS);
        if (result === "done") {
          await stopAndJudge(t, lab, first, "With no crash at all");
          t.fail(`Your consumer never ran another database statement after the effect of the message at ${describeRec(victim)}, although later messages followed it on its partition.`);
        }
        await restart(t, lab, second, "SIGKILL after the effect");
        await stopAndJudge(
          t,
          lab,
          second,
          crashedContext(`at the first database statement after the effect of the message at ${describeRec(victim)}`),
          { victim, lossHint: "Its 'processed' row was committed while its effect was lost with the crash: the two must commit in one transaction." },
        );
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
        const run = await lab.start(1);
        const result = await lab.settle(run, FIRST_RUN_MS);
        if (result === "timeout") failStuck(t, lab, run, "your consumer started", FIRST_RUN_MS);
        await run.stop();
        const problem = lab.verdict("With a transaction aborted by its producer in the stream");
        if (problem) {
          const isolation = run.consumerConfig?.readUncommitted ? " (your consumer was created with readUncommitted: true)" : "";
          t.fail(problem + isolation);
        }
      },
    },
  ],
});
