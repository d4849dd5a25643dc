import { isDeepStrictEqual } from "node:util";
import { defineGrader, describeValue } from "../../../src/kit/index.ts";
import type { Rng } from "../../../src/kit/index.ts";
import {
  ATTEMPTS,
  CALL_MS,
  World,
  callsText,
  errorText,
  label,
  model,
  newCommand,
  plans,
  q,
  type Fault,
  type Funding,
  type Kill,
  type Plan,
  type Proc,
  type Submission,
  type T,
} from "./grader-util.ts";

/** Runs each funding to its end in `proc`, one after another, and judges it. */
async function runEach(world: World, proc: Proc, fs: Funding[], context: string): Promise<void> {
  for (const f of fs) {
    await world.fund(proc, f);
    world.judge(f, context);
  }
}

/**
 * Runs fundings at the same time in one process, then judges each. The grader orders the answers
 * so that their calls interleave round-robin (A's debit, B's debit, A's credit, …), every time.
 */
async function runTogether(world: World, proc: Proc, fs: Funding[], context: string): Promise<void> {
  await world.together(proc, fs);
  for (const f of fs) world.judge(f, context);
}

async function learnerWorld(t: T): Promise<{ world: World; proc: Proc }> {
  const world = new World(t);
  const proc = await world.open(await t.learnerHost());
  return { world, proc };
}

const both = (rng: Rng): [Fault, Fault] => rng.shuffle<Fault>(["throw", "apply-throw"]) as [Fault, Fault];

// ---------------------------------------------------------------------------------------------
// Crashes: where the grader SIGKILLs the learner's process, in words.

function killText(f: Funding): string {
  const m = model(f.plan).calls;
  const parts = (f.plan.kills ?? []).map((k: Kill) => {
    if (k.at === "end") return "right after fund() had settled";
    const c = m[k.at]!;
    const which = c.method === "debit" || c.method === "credit" || c.method === "send" ? label(c.method) : `${label(c.method)} (a compensation)`;
    return k.when === "before"
      ? `inside ${which}, before the service did anything`
      : `inside ${which}, after the service had done it and before its answer reached your process`;
  });
  return `Funding ${q(f.plan.cmd.fundingId)} (${outcomeOf(f.plan)}): the grader SIGKILLed your process ${parts.join(", then the restarted one ")}, and started a new process on the same database, which called recover()`;
}

function outcomeOf(p: Plan): string {
  if (!p.fail) return "every step succeeds";
  const stuck = model(p).stuck;
  return `${p.fail === "send" ? "the notification" : `the ${p.fail}`} fails${stuck ? `, and ${stuck} fails ${ATTEMPTS} times` : ""}`;
}

/**
 * Every crash point of the three sagas, a crash during recovery, and crashes after the end, in
 * three chains of about the same length (the seed shuffles each).
 */
function crashPlans(rng: Rng): Plan[][] {
  const chains: Plan[][] = [[], [], []];
  let out = chains[0]!;
  const add = (p: Omit<Plan, "cmd">) => out.push({ cmd: newCommand(rng), ...p });
  // Success: debit, credit, send.
  for (const at of [0, 1, 2]) for (const when of ["before", "after"] as const) add({ kills: [{ at, when }] });
  add({ kills: [{ at: "end" }] });
  out = chains[1]!;
  // The credit fails: debit, credit ✗, refund.
  add({ fail: "credit", kills: [{ at: 1, when: "before" }] });
  for (const when of ["before", "after"] as const) add({ fail: "credit", kills: [{ at: 2, when }] });
  // Over before the crash: recovery must leave them alone.
  add({ fail: rng.pick(["debit", "credit", "send"] as const), kills: [{ at: "end" }] });
  add({ fail: "send", comp: { reverse: ["throw", "apply-throw", "throw"] }, kills: [{ at: "end" }] });
  out = chains[2]!;
  // The notification fails: debit, credit, send ✗, reverse, refund.
  add({ fail: "send", kills: [{ at: 2, when: "before" }] });
  for (const at of [3, 4]) for (const when of ["before", "after"] as const) add({ fail: "send", kills: [{ at, when }] });
  // A crash while recovering from a crash.
  const first = rng.pick<Kill>([
    { at: 0, when: "after" },
    { at: 1, when: "before" },
    { at: 1, when: "after" },
    { at: 2, when: "before" },
  ]);
  const second = rng.pick<Kill>([
    { at: 3, when: "before" },
    { at: 3, when: "after" },
    { at: 4, when: "before" },
    { at: 4, when: "after" },
  ]);
  add({ fail: "send", kills: [first, second] });
  return chains.map((c) => rng.shuffle(c));
}

/**
 * One chain of crashes on one database: each process recovers what the previous one left (and
 * must leave finished fundings alone), then runs the next funding until the grader kills it at
 * that funding's crash point. The last process only recovers.
 */
async function chain(t: T, queue: Plan[], file: string): Promise<void> {
  const world = new World(t, file);
  const start = () => {
    const p = t.host().then((h) => world.open(h));
    p.catch(() => {});
    return p;
  };
  let next: Promise<Proc> | null = start();
  for (;;) {
    const proc = await next!;
    next = queue.length ? start() : null;
    const busy = world.fundings.filter((f) => !f.judged);
    if (!(await world.recover(proc))) {
      // Killed while recovering: the next process recovers.
      next ??= start();
      continue;
    }
    for (const f of busy) world.judge(f, killText(f));
    for (const f of world.fundings.filter((x) => x.judged && x.calls.length > x.callsWhenJudged)) {
      t.fail(
        `recover() in a new process called ${callsText(f.calls.slice(f.callsWhenJudged))} for funding ${q(f.plan.cmd.fundingId)}, which was already over (its row: ${describeValue(world.row(f.plan.cmd.fundingId))}). Recovery leaves finished fundings alone.`,
      );
    }
    const plan = queue.shift();
    if (!plan) break;
    const f = world.add(plan);
    if ((await world.fund(proc, f)) === "settled") {
      world.judge(f, `Funding ${q(plan.cmd.fundingId)} (${outcomeOf(plan)}), before any crash`);
      proc.killed = true;
      await proc.host.kill();
    }
  }
  await world.noLateCalls();
}

/**
 * Three fundings (one succeeds, one whose credit fails, one whose notification fails) run at the
 * same time in one process, which the grader SIGKILLs at a call of one of them (the seed picks
 * which funding, which call after the first, before or after its effect). The others are in
 * flight then: each has its latest call answered by the service, the answer not yet back in the
 * process. A new process's recover() must finish every one of them.
 */
async function crashTogether(t: T, file: string): Promise<void> {
  const world = new World(t, file);
  const proc = await world.open(await t.host());
  const next = t.host().then((h) => world.open(h));
  next.catch(() => {});
  const fs = t.rng.shuffle<Omit<Plan, "cmd">>([{}, { fail: "credit" }, { fail: "send" }]).map((p) => world.add({ cmd: newCommand(t.rng), ...p }));
  const victim = t.rng.pick(fs);
  // Its second or third call: the answers come round-robin, so by then every other funding has
  // made a call too, and none has been given the answer of its third (none is over).
  const at = t.rng.int(1, 2);
  // A failing step does nothing: there is no "after" its effect.
  const when = model(victim.plan).calls[at]!.ok ? t.rng.pick(["before", "after"] as const) : "before";
  victim.plan.kills = [{ at, when }];
  await world.together(proc, fs);
  const ids = fs.map((f) => `${q(f.plan.cmd.fundingId)} (${outcomeOf(f.plan)})`).join(", ");
  // Its call never came: what the fundings did is wrong, and judging them says how.
  if (!proc.killed) for (const f of fs) world.judge(f, `Fundings ${ids} ran at the same time in one process`);
  const inFlight = fs.filter((f) => f !== victim && !f.settled);
  // One that made no call (the learner's code runs one funding at a time) and has no row never started.
  const unborn = inFlight.filter((f) => !f.calls.length && !world.row(f.plan.cmd.fundingId));
  for (const f of inFlight) {
    // Its call was answered by the service, and the answer died with the process: to be made again.
    const last = f.calls.at(-1);
    if (!last) continue;
    last.answer = "killed";
    f.plan.kills = [{ at: last.modelIndex, when: "after" }];
  }
  const second = await next;
  await world.recover(second);
  for (const f of unborn) {
    if (f.calls.length) t.fail(`Funding ${q(f.plan.cmd.fundingId)} had no row in fundings and had made no call when the grader SIGKILLed your process, yet recover() in a new process called ${callsText(f.calls)} for it.`);
    f.judged = true;
  }
  const c = model(victim.plan).calls[at]!;
  const context = `Fundings ${ids} ran at the same time in one process; the grader SIGKILLed it inside ${label(c.method)} of ${q(victim.plan.cmd.fundingId)}, ${when === "before" ? "before the service did anything" : "after the service had done it"}, while ${inFlight.length ? inFlight.map((f) => q(f.plan.cmd.fundingId)).join(" and ") : "no other funding"} waited for an answer, and a new process called recover(), which must finish every one of them`;
  for (const f of fs) if (!unborn.includes(f)) world.judge(f, context);
  await world.noLateCalls();
}

export default defineGrader<Submission>({
  exports: { createFundingSaga: "function" },
  // Plain calls on a database of the check's own; the crash checks start processes of their own.
  shareLearnerHost: true,
  checks: [
    {
      name: "a funding that succeeds debits, credits and notifies, once each and in order, and compensates nothing",
      hint: "await payments.debit(...), then ledger.credit(...), then notifications.send(...), each with the command's values and an idempotency key of its own; resolve with { fundingId, transferId, entryId }. Record the funding in the fundings table before the debit and set its status to 'completed' at the end.",
      async run(t) {
        const { world, proc } = await learnerWorld(t);
        const ps = plans(t.rng, 5);
        // The last one: the first one's customer funds the same account with the same amount again.
        const { paymentId, accountId, amount } = ps[0]!.cmd;
        ps[4]!.cmd = { ...ps[4]!.cmd, paymentId, accountId, amount };
        const fs = ps.map((p) => world.add(p));
        await runEach(world, proc, fs.slice(0, 1), "Every step succeeded");
        await runTogether(world, proc, fs.slice(1, 4), "Three fundings ran at the same time in one process, and every step succeeded");
        await runEach(world, proc, fs.slice(4), `A second funding of the same account from the same payment method, with the same amount (a new fundingId, after ${q(ps[0]!.cmd.fundingId)}); every step succeeded`);
        await world.noLateCalls();
      },
    },
    {
      name: "a failed debit compensates nothing, and fund() rejects with the debit's own error",
      hint: "A step that throws did nothing. Only the steps that succeeded before it are compensated, and before the debit nothing did: mark the funding 'failed' and rethrow the debit's error as it is.",
      async run(t) {
        const { world, proc } = await learnerWorld(t);
        const [a, b, c] = [world.add({ cmd: newCommand(t.rng), fail: "debit" }), world.add({ cmd: newCommand(t.rng) }), world.add({ cmd: newCommand(t.rng), fail: "debit" })];
        await runEach(world, proc, [a], "The debit failed");
        await runEach(world, proc, [b], "After a funding whose debit failed, every step of the next one succeeded");
        await runTogether(world, proc, [c, world.add({ cmd: newCommand(t.rng) })], "Two fundings ran at once, one whose debit failed");
        await world.noLateCalls();
      },
    },
    {
      name: "a failed credit refunds the debit, and only that, and fund() rejects with the credit's own error",
      hint: "Wrap the steps after the debit in try/catch: when the credit throws, refund the transfer the debit returned (with an idempotency key), mark the funding 'failed', then `throw` the credit's error itself.",
      async run(t) {
        const { world, proc } = await learnerWorld(t);
        const fs = [0, 1, 2].map(() => world.add({ cmd: newCommand(t.rng), fail: "credit" }));
        await runEach(world, proc, fs.slice(0, 1), "The credit failed");
        await runTogether(world, proc, [fs[1]!, world.add({ cmd: newCommand(t.rng) })], "Two fundings ran at once, one whose credit failed");
        await runEach(world, proc, fs.slice(2), "The credit failed");
        await world.noLateCalls();
      },
    },
    {
      name: "a failed notification reverses the credit, then refunds the debit, and fund() rejects with the notification's own error",
      hint: "The notification is a step of the funding: when it throws, both earlier steps succeeded, so both are undone, the latest first: ledger.reverse({ entryId }) and then payments.refund({ transferId }). Then rethrow the notification's error.",
      async run(t) {
        const { world, proc } = await learnerWorld(t);
        const fs = [0, 1, 2].map(() => world.add({ cmd: newCommand(t.rng), fail: "send" }));
        await runEach(world, proc, fs.slice(0, 1), "The notification failed");
        await runTogether(world, proc, [fs[1]!, world.add({ cmd: newCommand(t.rng), fail: "credit" })], "Two fundings ran at once: one whose notification failed, one whose credit failed");
        await runEach(world, proc, fs.slice(2), "The notification failed");
        await world.noLateCalls();
      },
    },
    {
      name: `a compensation that throws is tried again at once with the same idempotency key, up to ${ATTEMPTS} attempts`,
      hint: `A compensation that throws may have taken effect anyway (a timeout after the service committed). Call it again with the SAME idempotency key, up to ${ATTEMPTS} attempts in all: the service recognizes the key and does not refund twice.`,
      async run(t) {
        const { world, proc } = await learnerWorld(t);
        // Every run has both kinds of failure (nothing done; done, answer lost), on both compensations, once and twice.
        const [r1, r2] = both(t.rng);
        const [v1, v2] = both(t.rng);
        const [w1, w2] = both(t.rng);
        const fs = [
          world.add({ cmd: newCommand(t.rng), fail: "credit", comp: { refund: [r1, r2] } }),
          world.add({ cmd: newCommand(t.rng), fail: "send", comp: { reverse: [v1], refund: [v2] } }),
          world.add({ cmd: newCommand(t.rng), fail: "send", comp: { reverse: [w1, w2] } }),
          world.add({ cmd: newCommand(t.rng), fail: "credit", comp: { refund: [t.rng.pick<Fault>(["throw", "apply-throw"])] } }),
        ];
        for (const f of fs) await runEach(world, proc, [f], `${outcomeOf(f.plan)}; ${compText(f.plan)}`);
        await world.noLateCalls();
      },
    },
    {
      name: `a compensation that fails ${ATTEMPTS} times stops the saga as needs_repair, and fund() still rejects with the step's own error`,
      hint: `After the ${ATTEMPTS}rd failed attempt, stop compensating (a refund after a failed reversal pays the customer twice), set the funding's status to 'needs_repair' and last_error to that compensation's error message, and throw the failed step's error, not the compensation's.`,
      async run(t) {
        const { world, proc } = await learnerWorld(t);
        const three = (): Fault[] => t.rng.shuffle<Fault>(["throw", "throw", "apply-throw"]);
        const fs = [
          world.add({ cmd: newCommand(t.rng), fail: "send", comp: { reverse: three() } }),
          world.add({ cmd: newCommand(t.rng), fail: "credit", comp: { refund: three() } }),
          world.add({ cmd: newCommand(t.rng), fail: "send", comp: { reverse: ["throw"], refund: three() } }),
        ];
        for (const f of t.rng.shuffle(fs)) await runEach(world, proc, [f], `${outcomeOf(f.plan)}; ${compText(f.plan)}`);
        await world.noLateCalls();
      },
    },
    {
      name: "after a SIGKILL at any call, a new process's recover() finishes or compensates the funding, and never repeats a call whose answer was logged",
      hint: "Insert the funding (with its command) before the debit, and commit each answer (transferId, entryId, 'compensating', each compensation done) before the next call. recover() reads every funding that is not over and continues from there: the call in flight is made again with the same key; a funding that was compensating goes on compensating.",
      timeoutMs: 40_000,
      async run(t) {
        // Three chains at once, each on a database of its own: process k recovers what process
        // k - 1 left, then starts the next funding and is killed at that funding's crash point.
        await Promise.all([...crashPlans(t.rng).map((queue, i) => chain(t, queue, `saga-${i + 1}.db`)), crashTogether(t, "saga-together.db")]);
      },
    },
    {
      name: "recover() leaves finished fundings alone: no call, no change",
      hint: "recover() selects only the fundings whose status is not 'completed', 'failed' or 'needs_repair'. With nothing unfinished it calls nothing, and a second recover() does nothing either.",
      async run(t) {
        const { world, proc } = await learnerWorld(t);
        const fs = t.rng.shuffle([
          world.add({ cmd: newCommand(t.rng) }),
          world.add({ cmd: newCommand(t.rng), fail: "debit" }),
          world.add({ cmd: newCommand(t.rng), fail: "credit" }),
          world.add({ cmd: newCommand(t.rng), fail: "send" }),
          world.add({ cmd: newCommand(t.rng), fail: "send", comp: { reverse: ["throw", "throw", "throw"] } }),
        ]);
        await runEach(world, proc, fs, "Before the restart");
        const second = await world.open(await t.host());
        for (const round of ["recover()", "a second recover()"]) {
          await world.recover(second);
          for (const f of fs) {
            if (f.calls.length > f.callsWhenJudged) {
              t.fail(
                `A new process on the same database ran ${round}; it called ${callsText(f.calls.slice(f.callsWhenJudged))} for funding ${q(f.plan.cmd.fundingId)}, which was over (${outcomeOf(f.plan)}; status ${describeValue(world.row(f.plan.cmd.fundingId))}). A finished funding is never touched again.`,
              );
            }
          }
        }
        await runEach(world, second, [world.add({ cmd: newCommand(t.rng) })], "After recover() found nothing to do");
        await world.noLateCalls();
      },
    },
    {
      name: "a funding id that already ran is not run again: the same result, or a DuplicateFunding",
      hint: "Look the funding id up in the log first. Completed: return the recorded { fundingId, transferId, entryId } without calling anything. Otherwise (failed, needs repair, still running): throw a DuplicateFunding. Let the primary key on funding_id decide a race.",
      async run(t) {
        const { world, proc } = await learnerWorld(t);
        const ok = world.add({ cmd: newCommand(t.rng) });
        const bad = world.add({ cmd: newCommand(t.rng), fail: t.rng.pick(["debit", "credit", "send"] as const) });
        // And one left needing repair: sending it again does not retry the repair either.
        const stuck = world.add({ cmd: newCommand(t.rng), ...t.rng.pick<Omit<Plan, "cmd">>([{ fail: "send", comp: { reverse: ["throw", "throw", "throw"] } }, { fail: "credit", comp: { refund: ["throw", "apply-throw", "throw"] } }]) });
        await runEach(world, proc, [ok, bad, stuck], "The first time");
        const again = async (p: Proc, f: Funding, where: string) => {
          const before = f.calls.length;
          const cmd = f.plan.cmd;
          const label = `fund(${q(cmd.fundingId)}) a second time${where}`;
          let got: { ok: boolean; v: unknown };
          try {
            got = { ok: true, v: await t.within(label, CALL_MS, p.saga.fund(cmd)) };
          } catch (e) {
            if ((e as Error)?.name === "CheckFailure") throw e;
            got = { ok: false, v: e };
          }
          if (f.calls.length > before) t.fail(`${label} called ${callsText(f.calls.slice(before))}; a funding id the log already has is never run again.`);
          if (model(f.plan).status === "completed") {
            const want = { fundingId: cmd.fundingId, transferId: f.transferId, entryId: f.entryId };
            if (!got.ok || !isSame(got.v, want)) t.fail(`${label} ${got.ok ? `resolved with ${describeValue(got.v)}` : `rejected with ${errorText(got.v)}`}; the funding completed, so it must resolve with the same ${describeValue(want)} as the first time.`);
          } else if (got.ok || (got.v as Error | null)?.name !== "DuplicateFunding") {
            t.fail(`${label} ${got.ok ? `resolved with ${describeValue(got.v)}` : `rejected with ${errorText(got.v)}`}; the funding had ${model(f.plan).status === "needs_repair" ? "been left needing repair" : "failed"} (${outcomeOf(f.plan)}), so it must reject with a DuplicateFunding (an error named "DuplicateFunding").`);
          }
        };
        await again(proc, ok, "");
        await again(proc, bad, "");
        await again(proc, stuck, "");
        // The same command twice at once: one runs, the other is a DuplicateFunding.
        const twin = world.add({ cmd: newCommand(t.rng) });
        // Both are sent at once; the first one's debit is answered only once the second has settled.
        const both2: { ok: boolean; v: unknown }[] = [];
        await world.together(proc, [twin, twin], async (_f, run) => {
          await run;
          const s = twin.settled!;
          both2.push(s.ok ? { ok: true, v: s.value } : { ok: false, v: s.error });
        });
        const winners = both2.filter((r) => r.ok);
        const dup = both2.filter((r) => !r.ok && (r.v as Error | null)?.name === "DuplicateFunding");
        if (winners.length !== 1 || dup.length !== 1) {
          t.fail(`fund(${q(twin.plan.cmd.fundingId)}) was called twice at once, in one process, and the first one's debit was answered only once the second had settled (or your process had nothing left to do): ${both2.map((r) => (r.ok ? `resolved with ${describeValue(r.v)}` : `rejected with ${errorText(r.v)}`)).join("; ")}. The first runs it; the second finds the funding in the log, still running, and must reject with a DuplicateFunding. Calls: ${callsText(twin.calls)}.`);
        }
        twin.settled = { ok: true, value: winners[0]!.v };
        world.judge(twin, "The same command sent twice at once");
        // Another process on the same database knows them too.
        const other = await world.open(await t.host());
        await world.recover(other);
        for (const f of [ok, bad, stuck, twin]) await again(other, f, " from another process");
        await world.noLateCalls();
      },
    },
  ],
});

function isSame(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(a, b);
}

function compText(p: Plan): string {
  const fx = (fs: Fault[] | undefined, what: string) =>
    fs?.length ? `${what} failed on attempt${fs.length > 1 ? "s" : ""} ${fs.map((f, i) => `${i + 1} (${f === "throw" ? "nothing done" : "done, then the answer was lost"})`).join(" and ")}` : null;
  return [fx(p.comp?.reverse, "ledger.reverse"), fx(p.comp?.refund, "payments.refund")].filter(Boolean).join("; ");
}
