import Database from "better-sqlite3";
import { defineGrader, describeValue, HostGone } from "../../../src/kit/index.ts";
import type { NewEvent, RecordedEvent } from "../../../src/contracts/event-store-snapshots.ts";
import {
  Bank,
  CALL_MS,
  Outside,
  P,
  SNAPSHOT_RULE,
  Stream,
  accountId,
  appendBatches,
  appendLabel,
  appendOk,
  appendRefused,
  dbFileIn,
  errorText,
  expectEventRows,
  expectSnapshots,
  fileIds,
  fold,
  isConcurrencyError,
  loadExpect,
  newEvents,
  openFdsOn,
  openStore,
  q,
  ranges,
  replay,
  sharedDbPath,
  split,
  transitionText,
  type Account,
  type Store,
  type Submission,
  type T,
  clockSlackMs,
} from "./grader-util.ts";

// ---------------------------------------------------------------------------------------------
// Racing writers. The grader's own connection is a writer process too: it takes the write lock
// (BEGIN IMMEDIATE), lets the learner's appends start, and commits events of its own (or nothing)
// while they wait. An append that read the version before that commit and writes anyway is caught
// in the act: the grader's rows and the learner's share a version.

/**
 * How long the grader holds the write lock while the learner's appends start. They need well
 * under a millisecond to reach the lock (a message to an idle host, then one SELECT); the rounds
 * repeat, so a host that was descheduled in one round is caught in the next.
 */
const LOCK_WINDOW_MS = 6;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/**
 * The pause between appends, beyond the recorded_at check's slack for the precision the learner
 * writes (see clockSlackMs): a time taken once, when the store opened or at the first append, is
 * then off by more than the slack. Real time, so load only lengthens it.
 */
const PAUSE_BEYOND_SLACK_MS = 150;

type Mode = "grader-commits" | "grader-holds" | "free";

interface Writer {
  store: Store;
  /** Where it runs, for messages: "the store in process 2". */
  where: string;
}

type Settled = { ok: true; value: unknown } | { ok: false; error: unknown };

function settle(p: Promise<unknown>): Promise<Settled> {
  return p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

function versionSpan(from: number, to: number): string {
  return from === to ? `version ${from}` : `versions ${from}–${to}`;
}

function snapsText(vs: readonly number[]): string {
  return vs.length ? `snapshots at ${ranges(vs)}` : "no snapshot";
}

function outcomeText(r: Settled): string {
  return r.ok ? `returned ${describeValue(r.value)}` : `threw ${errorText(r.error)}`;
}

function busyAdvice(e: unknown): string {
  const code = String((e as { code?: unknown } | null)?.code ?? "");
  if (!code.startsWith("SQLITE_BUSY")) return "";
  return (
    " SQLITE_BUSY means your connection gave up on the write lock: keep the busy timeout from the scaffold (another process holds the lock for a moment), " +
    "and take the lock before reading the version (db.transaction(fn).immediate()): a deferred transaction that has already read cannot wait for it."
  );
}

/**
 * For writers in ONE host, started in the same turn of its event loop: the grader sends the
 * appends while the host is blocked inside apply() during a load of `id` (an aggregate with
 * events), so both messages are waiting when it returns to its loop, and it reads them in one go.
 * An append that awaits anything between its check and its insert lets the other one in, every time.
 */
interface Gate {
  store: Store;
  bank: Bank;
  id: string;
}

/**
 * One round: every writer appends on top of the same version at once. Exactly one may win, or
 * none when the grader committed events of its own first ("grader-commits"); every loser must
 * get a ConcurrencyError; the table stays gapless, each version once, snapshots as due.
 */
async function race(t: T, writers: Writer[], out: Outside, s: Stream, mode: Mode, gate?: Gate): Promise<void> {
  const cur = s.version;
  const batches: NewEvent[][] = writers.map(() => newEvents(t.rng, t.rng.int(1, 4)));
  const mine = mode === "grader-commits" ? newEvents(t.rng, t.rng.int(1, 3)) : null;
  let calls: Promise<Settled>[] | null = null;
  const started = Date.now();
  const fire = () => writers.map((w, i) => settle(w.store.append(s.id, cur, batches[i]!)));
  if (gate) {
    gate.bank.onApply = (event) => {
      if (event?.aggregateId === gate.id) calls ??= fire();
      return undefined;
    };
    try {
      await t.within(`load(${q(gate.id)})`, CALL_MS, gate.store.load(gate.id));
    } finally {
      gate.bank.onApply = null;
    }
    if (!calls) t.fail(`load(${q(gate.id)}) returned without calling aggregate.apply() for its events; a load must apply the events after the latest snapshot.`);
  } else if (mode === "free") {
    calls = fire();
  } else {
    out.db.exec("BEGIN IMMEDIATE");
    try {
      calls = fire();
      await sleep(LOCK_WINDOW_MS);
      if (mine) out.insertEvents(s, mine);
      out.db.exec("COMMIT");
    } finally {
      if (out.db.inTransaction) out.db.exec("ROLLBACK");
    }
  }
  const results = await t.within(`${writers.length} concurrent append() calls`, CALL_MS, Promise.all(calls!));
  const calledText = writers.map((w, i) => `${w.where} called ${appendLabel(s.id, cur, batches[i]!.length)} and ${outcomeText(results[i]!)}`).join("; ");
  const setting = mine
    ? `While the grader's own connection held the write lock, ${calledText}. The grader then committed ${versionSpan(cur + 1, cur + mine.length)} itself, before any of them could write`
    : `${mode === "grader-holds" ? "While the grader's own connection held the write lock (it then committed nothing), " : "At the same time, "}${calledText}`;
  const winners = results.map((r, i) => ({ r, i })).filter((x) => x.r.ok);
  if (mine && winners.length > 0) {
    const rows = out.eventVersions(s.id);
    t.fail(
      `${setting}; the version they were decided on was gone, yet ${winners.length} append(s) succeeded. The events table now holds versions ${ranges(rows)}${rows.length !== new Set(rows).size ? " (a version twice)" : ""}. ` +
        `Check the version inside the write transaction, after taking the lock, and keep the primary key (aggregate_id, version) as the last line of defence.`,
    );
  }
  if (!mine && winners.length !== 1) {
    t.fail(`${setting}. ${winners.length} succeeded; exactly one may win, every other must get a ConcurrencyError.`);
  }
  for (const r of results) {
    if (!r.ok && !isConcurrencyError(r.error)) {
      t.fail(
        `${setting}. A losing append must throw a ConcurrencyError (another writer got there first), not ${errorText(r.error)}.${busyAdvice(r.error)}`,
      );
    }
  }
  if (!mine) {
    const { r, i } = winners[0]!;
    const batch = batches[i]!;
    if (r.ok && r.value !== cur + batch.length) {
      t.fail(`${setting}. The winner returned ${describeValue(r.value)}; its events are ${versionSpan(cur + 1, cur + batch.length)}, so it must return ${cur + batch.length}.`);
    }
    s.record(batch, [started, Date.now()]);
    s.appends.push([cur, s.version]);
  }
  const when = mine ? `After the grader committed ${versionSpan(cur + 1, s.version)} while appends on top of ${cur} waited` : `After the concurrent appends on top of version ${cur}`;
  expectEventRows(t, out, s, when);
  expectSnapshots(t, out, s, s.expectedSnapshots(), when, SNAPSHOT_RULE);
}

const REDATED =
  " (after each append, the grader re-dated the snapshots from outside so that older ones have the later created_at: the latest are the highest versions, whatever created_at says)";

// ---------------------------------------------------------------------------------------------

export default defineGrader<Submission>({
  exports: { createEventStore: "function" },
  // Every check makes its own store on a file of its own; a process of their own is one
  // `t.host()` away for the checks that need one (a crash, a second writer).
  shareLearnerHost: true,
  checks: [
    {
      name: "an aggregate with no events loads as initial() at version 0",
      hint: "With no snapshot and no events, load returns { state: aggregate.initial(), version: 0 }.",
      async run(t) {
        const host = await t.learnerHost();
        const bank = new Bank(t);
        const store = await openStore(t, host, dbFileIn(t, host), bank);
        const empty = new Stream(accountId(t.rng));
        await loadExpect(t, store, bank, empty, { snapshot: 0, context: "on an empty store" });
        // Another aggregate whose id starts with ours gets events; ours must still be empty.
        const other = new Stream(`${empty.id}${t.rng.int(0, 9)}`);
        await appendBatches(t, store, bank, other, split(t.rng, t.rng.int(3, 8), 3));
        await loadExpect(t, store, bank, empty, { snapshot: 0, context: `after events were appended to ${q(other.id)}` });
      },
    },
    {
      name: "appends get versions 1, 2, 3… and a load equals a replay of the events table",
      hint: "Insert each event at expectedVersion + 1, + 2, … and return the last one; load reads the rows back in version order and folds them with aggregate.apply.",
      async run(t) {
        const host = await t.learnerHost();
        const path = dbFileIn(t, host);
        const bank = new Bank(t);
        const writer = await openStore(t, host, path, bank);
        const s = new Stream(accountId(t.rng));
        await appendBatches(t, writer, bank, s, split(t.rng, t.rng.int(10, 20), 7));
        // Real time passes between appends (more than the clock slack the recorded_at check allows
        // for the precision the learner writes): a time taken once, when the store opened or at the
        // first append, is then off by more than the slack.
        const out = new Outside(t, path);
        const first = out.events(s.id)[0]?.recorded_at;
        const pause = clockSlackMs(typeof first === "string" ? first : "") + PAUSE_BEYOND_SLACK_MS;
        await sleep(pause);
        await appendBatches(t, writer, bank, s, split(t.rng, t.rng.int(20, 40), 7));
        expectEventRows(t, out, s, `After the appends (with a pause of ${pause} ms between the first ones and the others)`);
        // A second store on the same file sees everything.
        const reader = await openStore(t, host, path, bank);
        await loadExpect(t, reader, bank, s, { snapshot: 0, context: "from a second store on the same file" });
        // Events another process writes count too: the grader appends three rows itself.
        out.insertEvents(s, newEvents(t.rng, 3));
        await loadExpect(t, writer, bank, s, { snapshot: 0, context: "after the grader added 3 events from its own connection" });
      },
    },
    {
      name: "a snapshot is saved at every 100th event, holding the state at its version",
      hint: "After the events are inserted (same transaction), check whether the append reached a multiple of 100; if so load the state and insert it into snapshots at the new version.",
      async run(t) {
        const host = await t.learnerHost();
        const path = dbFileIn(t, host);
        const bank = new Bank(t);
        const store = await openStore(t, host, path, bank);
        const out = new Outside(t, path);
        const s = new Stream(accountId(t.rng));
        const check = () => expectSnapshots(t, out, s, s.expectedSnapshots(), transitionText(s), SNAPSHOT_RULE);
        // Land exactly on 100, 200 and 300, then a little past.
        for (const total of [100, 100, 100, t.rng.int(5, 40)]) {
          await appendBatches(t, store, bank, s, split(t.rng, total, 12), check);
        }
      },
    },
    {
      name: "a load starts from the latest snapshot and applies only the events after it",
      hint: "Read the snapshot with the highest version (ORDER BY version DESC LIMIT 1), parse its state, then apply only events with version > that snapshot's version.",
      async run(t) {
        const host = await t.learnerHost();
        const path = dbFileIn(t, host);
        const bank = new Bank(t);
        const writer = await openStore(t, host, path, bank);
        const s = new Stream(accountId(t.rng));
        await appendBatches(t, writer, bank, s, split(t.rng, t.rng.int(201, 209), 12));
        await appendBatches(t, writer, bank, s, split(t.rng, t.rng.int(10, 40), 8));
        const out = new Outside(t, path);
        const snaps = s.expectedSnapshots();
        expectSnapshots(t, out, s, snaps, `With ${q(s.id)} at version ${s.version}`, SNAPSHOT_RULE);
        const latest = snaps.at(-1)!;

        const reader = await openStore(t, host, path, bank);
        await loadExpect(t, reader, bank, s, { snapshot: latest, context: `(${s.version} events, snapshots at ${ranges(snaps)})` });

        // From outside: garble every event at or below the latest snapshot, give that snapshot a
        // marked state, and make the older snapshots look newer by created_at. A load that starts
        // from the latest snapshot and reads only later events is not affected by any of it.
        out.run(
          "UPDATE events SET type = 'Garbled', data = ? WHERE aggregate_id = ? AND version <= ?",
          JSON.stringify({ amount: 987_654, memo: "garbled by the grader" }),
          s.id,
          latest,
        );
        const real = replay(s.truth, latest);
        const marked: Account = { ...real, balance: real.balance + 1_000_000, digest: (real.digest + 424_242) % P };
        out.run("UPDATE snapshots SET state = ? WHERE aggregate_id = ? AND version = ?", JSON.stringify(marked), s.id, latest);
        out.run(
          "UPDATE snapshots SET state = ?, created_at = '2999-12-31T23:59:59.999Z' WHERE aggregate_id = ? AND version < ?",
          JSON.stringify({ ...real, balance: -1, digest: 1 }),
          s.id,
          latest,
        );
        const fresh = await openStore(t, host, path, bank);
        await loadExpect(t, fresh, bank, s, {
          snapshot: latest,
          state: fold(marked, s.truth.slice(latest)),
          context: `after the grader garbled events 1–${latest} and marked the snapshot at ${latest} (the balance ${real.balance} became ${marked.balance}) from outside`,
        });
      },
    },
    {
      name: "an append that jumps past a multiple of 100 snapshots at its new version",
      hint: "`version % 100 === 0` misses a batch that goes from 95 to 105, and a batch from 195 to 310 passes two multiples but takes one snapshot. Compare Math.floor(before / 100) with Math.floor(after / 100) and snapshot at `after`.",
      async run(t) {
        const host = await t.learnerHost();
        const path = dbFileIn(t, host);
        const bank = new Bank(t);
        const store = await openStore(t, host, path, bank);
        const out = new Outside(t, path);
        const s = new Stream(accountId(t.rng));
        const check = () => expectSnapshots(t, out, s, s.expectedSnapshots(), transitionText(s), SNAPSHOT_RULE);
        const a = t.rng.int(90, 97);
        await appendBatches(t, store, bank, s, split(t.rng, a, 12), check);
        await appendBatches(t, store, bank, s, [t.rng.int(101, 109) - a], check); // e.g. 95 → 105
        await appendBatches(t, store, bank, s, split(t.rng, t.rng.int(185, 198) - s.version, 12), check);
        await appendBatches(t, store, bank, s, [t.rng.int(301, 330) - s.version], check); // 19x → 3xx, past 200 and 300: one snapshot
        await appendBatches(t, store, bank, s, split(t.rng, t.rng.int(5, 20), 6), check);
        await loadExpect(t, store, bank, s, { snapshot: s.latestSnapshot() });
      },
    },
    {
      name: "only the latest 3 snapshots of each aggregate are kept",
      hint: "After inserting a snapshot, delete that aggregate's snapshots except the 3 with the highest versions, in the same transaction.",
      async run(t) {
        const host = await t.learnerHost();
        const path = dbFileIn(t, host);
        const bank = new Bank(t);
        const store = await openStore(t, host, path, bank);
        const out = new Outside(t, path);
        const big = new Stream(accountId(t.rng));
        const small = new Stream(`${big.id}${t.rng.int(0, 9)}`);
        // The big one reaches 4 snapshots (so one is pruned), the small one 1 or 2:
        // together more than 3, which a prune that forgets the aggregate cannot keep.
        const plans = new Map([
          [big, split(t.rng, t.rng.int(410, 450), 40)],
          [small, split(t.rng, t.rng.int(110, 180), 40)],
        ]);
        // Interleave the two aggregates' appends in a seeded order.
        while ([...plans.values()].some((p) => p.length)) {
          const s = t.rng.pick([...plans.keys()].filter((k) => plans.get(k)!.length));
          await appendBatches(t, store, bank, s, [plans.get(s)!.shift()!]);
          for (const other of [big, small]) {
            const when = other === s ? transitionText(other) : `After an append to ${q(s.id)}`;
            expectSnapshots(t, out, other, other.expectedSnapshots(), when + REDATED, SNAPSHOT_RULE);
          }
          // From outside: date every snapshot so far in the future, the older ones later (created_at
          // is informational). A prune that keeps the highest versions is not affected by it.
          out.run(
            "UPDATE snapshots SET created_at = strftime('%Y-%m-%dT%H:%M:%SZ', 32503680000 - version * 60, 'unixepoch') WHERE aggregate_id IN (?, ?)",
            big.id,
            small.id,
          );
        }
      },
    },
    {
      name: "a stale or future expected version is refused with a ConcurrencyError and writes nothing",
      hint: "Inside one transaction, read MAX(version) for the aggregate and throw a ConcurrencyError unless it equals expectedVersion, before inserting anything.",
      async run(t) {
        const host = await t.learnerHost();
        const path = dbFileIn(t, host);
        const bank = new Bank(t);
        const store = await openStore(t, host, path, bank);
        const out = new Outside(t, path);
        const s = new Stream(accountId(t.rng));
        await appendBatches(t, store, bank, s, split(t.rng, t.rng.int(90, 97), 9));
        const unchanged = (what: string) => {
          expectEventRows(t, out, s, `After ${what}`);
          expectSnapshots(t, out, s, [], `After ${what}`, "A refused append writes nothing: no event and no snapshot.");
        };
        const cur = s.version;
        const behind = t.rng.int(1, cur - 5);
        // Big enough to cross 100 from the stale version: a refused append must not snapshot either.
        await appendRefused(t, store, s.id, behind, newEvents(t.rng, 12), `${q(s.id)} is at version ${cur}, not ${behind} (a stale read)`);
        unchanged(`the refused append with expected version ${behind}`);
        const ahead = cur + t.rng.int(1, 5);
        await appendRefused(t, store, s.id, ahead, newEvents(t.rng, 3), `${q(s.id)} is at version ${cur}, not ${ahead}; accepting it would leave a gap in the versions`);
        unchanged(`the refused append with expected version ${ahead}`);
        await appendRefused(t, store, s.id, 0, newEvents(t.rng, 1), `${q(s.id)} already has ${cur} events, so it is not new (expected version 0)`);
        unchanged("the refused append with expected version 0");
        const ghost = new Stream(`${s.id}-new`);
        await appendRefused(t, store, ghost.id, 2, newEvents(t.rng, 2), `${q(ghost.id)} has no events, so its version is 0, not 2`);
        expectEventRows(t, out, ghost, "After the refused append to a new aggregate");
        // The right expected version still works, and the refusals left no trace in the snapshot.
        await appendOk(t, store, bank, s, newEvents(t.rng, t.rng.int(101, 110) - cur));
        expectSnapshots(t, out, s, s.expectedSnapshots(), transitionText(s), SNAPSHOT_RULE);
        expectEventRows(t, out, s, "After the accepted append");
      },
    },
    {
      name: "two stores on one file: the slower writer gets a ConcurrencyError, not a duplicate",
      hint: "Check the version against the database inside the write transaction (not a version remembered in memory), and turn the primary-key violation SQLITE_CONSTRAINT_PRIMARYKEY into a ConcurrencyError.",
      async run(t) {
        const host = await t.learnerHost();
        const path = dbFileIn(t, host);
        const bank = new Bank(t);
        const a = await openStore(t, host, path, bank);
        const b = await openStore(t, host, path, bank);
        const out = new Outside(t, path);
        const s = new Stream(accountId(t.rng));
        await appendBatches(t, a, bank, s, split(t.rng, t.rng.int(90, 95), 9));
        const seen = s.version;
        await loadExpect(t, b, bank, s, { snapshot: 0, context: "on the second store" });
        await appendOk(t, a, bank, s, newEvents(t.rng, 2));
        await appendRefused(t, b, s.id, seen, newEvents(t.rng, 1), `the other store appended versions ${seen + 1}–${seen + 2} after this one read version ${seen}`);
        expectEventRows(t, out, s, "After the second store's stale append");
        // The second store, told the right version, appends across 100 without loading first:
        // its snapshot must hold what the database holds, including the first store's events.
        await appendOk(t, b, bank, s, newEvents(t.rng, t.rng.int(101, 106) - s.version));
        expectSnapshots(t, out, s, s.expectedSnapshots(), transitionText(s), SNAPSHOT_RULE);

        // Both at once, with the same expected version: exactly one wins. In one process, an
        // append that awaits between its check and its insert lets the other one in.
        const [first, second] = t.rng.next() < 0.5 ? [a, b] : [b, a];
        const gate = new Stream(`${s.id} (gate)`);
        await appendBatches(t, a, bank, gate, [t.rng.int(1, 3)]);
        const writers = [
          { store: first, where: "one store" },
          { store: second, where: "another store on the same file" },
        ];
        await race(t, writers, out, s, "free", { store: first, bank, id: gate.id });
        await loadExpect(t, a, bank, s, { snapshot: s.latestSnapshot(), context: "after the concurrent appends" });
      },
    },
    {
      name: "writers in separate processes: exactly one append per version wins, and the stream stays gapless",
      hint: "Take the write lock before you read the version (db.transaction(fn).immediate(...)), keep the scaffold's busy timeout and the primary key (aggregate_id, version), and turn a key violation into a ConcurrencyError.",
      timeoutMs: 30_000,
      async run(t) {
        // Two learner processes on one file, and the grader's own connection as a third writer.
        // The second host starts while the first one's store gets the stream going.
        const second = t.host();
        second.catch(() => {});
        const bank = new Bank(t);
        const path = sharedDbPath(t);
        const writers: Writer[] = [{ store: await openStore(t, await t.learnerHost(), path, bank), where: "the store in process 1" }];
        const out = new Outside(t, path);
        if (!out.hasUniqueVersionKey()) {
          t.fail(
            "The events table has no primary key or UNIQUE constraint on (aggregate_id, version) (the grader read its schema with PRAGMA table_info and index_list). Without it, two processes that both read version 7 can both store version 8; keep PRIMARY KEY (aggregate_id, version) from the scaffold.",
          );
        }
        const s = new Stream(accountId(t.rng));
        // Start just below 100, so the races cross it and the winner snapshots under contention.
        await appendBatches(t, writers[0]!.store, bank, s, split(t.rng, t.rng.int(88, 96), 12));
        writers.push({ store: await openStore(t, await second, path, bank), where: "the store in process 2" });
        const modes: Mode[] = t.rng.shuffle([
          ...Array<Mode>(4).fill("grader-commits"),
          ...Array<Mode>(2).fill("grader-holds"),
          ...Array<Mode>(12).fill("free"),
        ]);
        for (const mode of modes) await race(t, writers, out, s, mode);
        for (const w of writers) await loadExpect(t, w.store, bank, s, { snapshot: s.latestSnapshot(), context: `on ${w.where}, after the races` });
      },
    },
    {
      name: "aggregates are independent: versions, snapshots and loads never mix",
      hint: "Every query filters on aggregate_id: the current version, the latest snapshot, the events after it and the pruning.",
      async run(t) {
        const host = await t.learnerHost();
        const path = dbFileIn(t, host);
        const bank = new Bank(t);
        const store = await openStore(t, host, path, bank);
        const out = new Outside(t, path);
        const big = new Stream(accountId(t.rng));
        const small = new Stream(`${big.id}${t.rng.int(0, 9)}`);
        const plans = new Map([
          [big, split(t.rng, t.rng.int(105, 140), 10)],
          [small, split(t.rng, t.rng.int(30, 70), 10)],
        ]);
        while ([...plans.values()].some((p) => p.length)) {
          const s = t.rng.pick([...plans.keys()].filter((k) => plans.get(k)!.length));
          await appendBatches(t, store, bank, s, [plans.get(s)!.shift()!]);
        }
        for (const s of [big, small]) {
          expectEventRows(t, out, s, "After interleaved appends to two aggregates");
          expectSnapshots(t, out, s, s.expectedSnapshots(), "After interleaved appends to two aggregates", SNAPSHOT_RULE);
        }
        const reader = await openStore(t, host, path, bank);
        await loadExpect(t, reader, bank, small, { snapshot: 0, context: `(it has no snapshot; ${q(big.id)} has one)` });
        await loadExpect(t, reader, bank, big, { snapshot: big.latestSnapshot() });
      },
    },
    {
      name: "aggregate ids are any strings, compared exactly: quotes, case, spaces, % and _",
      hint: "Pass the id as a bound parameter (aggregate_id = ?), never inside the SQL text; compare with = (not LIKE, not a NOCASE collation), and store it as given (no trim, no case change).",
      async run(t) {
        const host = await t.learnerHost();
        const path = dbFileIn(t, host);
        const bank = new Bank(t);
        const store = await openStore(t, host, path, bank);
        const out = new Outside(t, path);
        const n = t.rng.int(1, 99);
        // Ids that naive code confuses: SQL built by hand breaks on the quotes; LIKE matches `_`
        // and `%` as wildcards and ignores ASCII case; trim() and toLowerCase() merge them.
        const ids = [
          `o'brien:"acct" ${n}`,
          `O'BRIEN:"ACCT" ${n}`,
          `o'brien:"acct" ${n} `,
          `o_brien:"acct" ${n}`,
          `50%:café ☕ ${n}`,
          `50% off:café ☕ ${n}`,
          `50%:cafe\u0301 ☕ ${n}`,
          `back\\slash'); DROP TABLE events; -- ${n}`,
        ];
        const streams = t.rng.shuffle(ids).map((id) => new Stream(id));
        // One of them (the seed says which) gets a snapshot; the others stay short, each its own length.
        const plans = new Map(streams.map((s, i) => [s, i === 0 ? split(t.rng, t.rng.int(101, 130), 25) : split(t.rng, 3 + i * 2 + t.rng.int(0, 1), 4)]));
        while ([...plans.values()].some((p) => p.length)) {
          const s = t.rng.pick([...plans.keys()].filter((k) => plans.get(k)!.length));
          await appendBatches(t, store, bank, s, [plans.get(s)!.shift()!]);
        }
        for (const s of streams) {
          expectEventRows(t, out, s, `After appends to ${ids.length} aggregates with look-alike ids`);
          expectSnapshots(t, out, s, s.expectedSnapshots(), `After appends to ${ids.length} aggregates with look-alike ids`, SNAPSHOT_RULE);
        }
        for (const s of t.rng.shuffle(streams)) await loadExpect(t, store, bank, s, { snapshot: s.latestSnapshot(), context: "among aggregates with look-alike ids" });
        const unknown = new Stream(`${streams[0]!.id.slice(0, -1)}%`);
        await loadExpect(t, store, bank, unknown, { snapshot: 0, context: "(no aggregate has this id; others start the same)" });
      },
    },
    {
      name: "snapshotEvery and keepSnapshots options are honored",
      hint: "Use options.snapshotEvery ?? 100 and options.keepSnapshots ?? 3 instead of fixed numbers.",
      async run(t) {
        const host = await t.learnerHost();
        const path = dbFileIn(t, host);
        const every = t.rng.int(7, 13);
        const keep = 2;
        const bank = new Bank(t);
        const opts = { snapshotEvery: every, keepSnapshots: keep };
        const store = await openStore(t, host, path, bank, opts);
        const out = new Outside(t, path);
        const s = new Stream(accountId(t.rng));
        const rule = `With snapshotEvery ${every} and keepSnapshots ${keep}, a snapshot is due when floor(before / ${every}) < floor(after / ${every}), and the latest ${keep} are kept.`;
        await appendBatches(t, store, bank, s, split(t.rng, t.rng.int(60, 80), 5), () =>
          expectSnapshots(t, out, s, s.expectedSnapshots(every, keep), transitionText(s), rule),
        );
        const reader = await openStore(t, host, path, bank, opts);
        await loadExpect(t, reader, bank, s, { snapshot: s.latestSnapshot(every, keep) });
      },
    },
    {
      name: "an append is atomic: a crash while it takes its snapshot leaves none of it, and no reader sees its events without it",
      hint: "Insert the events, the snapshot and the pruning in ONE transaction (db.transaction(fn).immediate()): another connection sees all of it at the commit or none of it, and a crash before the commit leaves none of it.",
      async run(t) {
        // A process of its own, which the grader SIGKILLs; the file is in the check's shared
        // folder, so a store in another process reopens it afterwards.
        const host = await t.host();
        const path = sharedDbPath(t);
        const bank = new Bank(t);
        const store = await openStore(t, host, path, bank);
        const out = new Outside(t, path);
        const s = new Stream(accountId(t.rng));
        await appendBatches(t, store, bank, s, split(t.rng, t.rng.int(88, 98), 30));
        const before = s.version;
        // It crosses 100: the append must insert its events and a snapshot at `after`, together.
        const batch = newEvents(t.rng, t.rng.int(101, 110) - before);
        const after = before + batch.length;
        // Where it dies: inside apply() for one of the new events, chosen by the seed. Every
        // design must apply each of them during this append to take the snapshot at `after`.
        const killAt = t.rng.int(before + 1, after);
        const oldSnaps = s.expectedSnapshots();
        const newSnaps = [after];
        const label = appendLabel(s.id, before, batch.length);
        /** What the grader's connection sees: the state before the append, all of it, or (a fail) something in between. */
        const seen = (): "before" | "after" | string => {
          const evs = out.eventVersions(s.id);
          const snaps = out.snapshotVersions(s.id);
          const at = (vs: number[], n: number, ss: number[]) => vs.length === n && vs.at(-1) === n && snaps.length === ss.length && ss.every((v, i) => snaps[i] === v);
          if (at(evs, before, oldSnaps)) return "before";
          if (at(evs, after, newSnaps)) return "after";
          return `events ${ranges(evs)} and ${snapsText(snaps)}`;
        };
        let midway: string | null = null;
        let killed = false;
        bank.onApply = (event: RecordedEvent) => {
          if (killed) return new Promise(() => {});
          const now = seen();
          if (now !== "before" && now !== "after") {
            midway ??= `While ${label} was inside aggregate.apply() for event ${describeValue(event?.version)}, the grader's own connection saw ${now}; before the append it held events 1–${before} and ${snapsText(oldSnaps)}`;
          }
          if (event?.version === killAt || midway) {
            killed = true;
            // Answer only once the host is dead: it never runs another instruction.
            return host.kill().then(() => ({}));
          }
          return undefined;
        };
        let outcome: string;
        const started = Date.now();
        try {
          const r = await t.within(label, CALL_MS, store.append(s.id, before, batch));
          outcome = `returned ${describeValue(r)}`;
        } catch (e) {
          if (!(e instanceof HostGone)) throw e;
          if (e.end.kind !== "killed") throw e;
          outcome = "was killed";
        } finally {
          bank.onApply = null;
        }
        if (midway) t.fail(`${midway}. Events, snapshot and pruning must commit in one transaction; a reader (or a crash) must never find the events without their snapshot.`);
        if (!killed) {
          t.fail(
            `${label} crosses ${Math.floor(after / 100) * 100}, so it must save a snapshot at ${after} holding the state after events 1–${after}; it ${outcome} without ever calling aggregate.apply() for event ${killAt}.`,
          );
        }
        await host.exited;
        const left = seen();
        if (left !== "before" && left !== "after") {
          t.fail(
            `The grader SIGKILLed your store's process inside aggregate.apply() for event ${killAt}, while ${label} was taking its snapshot. Afterwards the database holds ${left}; before the append it held events 1–${before} and ${snapsText(oldSnaps)}. A crash must leave all of the append or none of it: one transaction for the events, the snapshot and the pruning.`,
          );
        }
        if (left === "after") {
          s.record(batch, [started, Date.now()]);
          s.appends.push([before, after]);
        }
        const crash = `After the grader SIGKILLed your store's process inside aggregate.apply() for event ${killAt} of ${label}`;
        expectEventRows(t, out, s, crash);
        expectSnapshots(t, out, s, s.expectedSnapshots(), crash, SNAPSHOT_RULE);
        // A store in another process takes over the file and carries on from what survived.
        const next = new Bank(t);
        const again = await openStore(t, await t.learnerHost(), path, next);
        await loadExpect(t, again, next, s, { snapshot: s.latestSnapshot(), context: `in a new process, ${crash.charAt(0).toLowerCase()}${crash.slice(1)}` });
        await appendOk(t, again, next, s, newEvents(t.rng, t.rng.int(101, 110) + (left === "after" ? 100 : 0) - s.version));
        expectEventRows(t, out, s, `After the new process appended past the crash`);
        expectSnapshots(t, out, s, s.expectedSnapshots(), transitionText(s), SNAPSHOT_RULE);
      },
    },
    {
      name: "close() closes the store's connection: afterwards no process of yours holds the database file",
      hint: "close() must call db.close() on every connection the store opened (and only this store's: another store on the same file carries on).",
      async run(t) {
        const host = await t.learnerHost();
        const path = dbFileIn(t, host);
        const bank = new Bank(t);
        const a = await openStore(t, host, path, bank);
        const b = await openStore(t, host, path, bank);
        const s = new Stream(accountId(t.rng));
        // Every statement a store has: appends across a snapshot, loads on both stores.
        await appendBatches(t, a, bank, s, split(t.rng, t.rng.int(101, 130), 25));
        await loadExpect(t, b, bank, s, { snapshot: s.latestSnapshot(), context: "on a second store" });
        await appendBatches(t, b, bank, s, split(t.rng, t.rng.int(2, 9), 4));
        const ids = fileIds(path);
        // While the stores are open the grader must see their descriptors: otherwise it cannot
        // look here (or the store opens a connection per call), and SQLite alone decides below.
        const whileOpen = openFdsOn(host.pid, path, ids);
        const canSee = whileOpen !== null && whileOpen.length > 0;
        const [first, second] = t.rng.next() < 0.5 ? [a, b] : [b, a];
        await t.within("close() on one store", CALL_MS, first.close());
        // The other store on the same file is not affected.
        await appendBatches(t, second, bank, s, split(t.rng, t.rng.int(1, 6), 3));
        await loadExpect(t, second, bank, s, { snapshot: s.latestSnapshot(), context: "on the other store, after close() on the first" });
        await t.within("close() on the other store", CALL_MS, second.close());
        await host.turns();
        if (canSee) {
          const left = openFdsOn(host.pid, path, ids) ?? [];
          if (left.length) {
            t.fail(
              `After close() returned on both stores on ${path}, your store's process still has the database open (from /proc: ${left.slice(0, 4).join(", ")}). close() must close every SQLite connection the store opened (db.close()).`,
            );
          }
        }
        // SQLite's own word: leaving WAL mode needs the file to itself, and fails with SQLITE_BUSY
        // while any other connection (an idle one too) has it open.
        const g = new Database(path, { timeout: 0 });
        try {
          let mode: unknown;
          try {
            mode = g.pragma("journal_mode = DELETE", { simple: true });
          } catch (e) {
            t.fail(
              `After close() returned on both stores on ${path}, the grader's own connection could not take the file for itself (PRAGMA journal_mode = DELETE failed: ${errorText(e)}): another connection still has it open. close() must close every SQLite connection the store opened (db.close()).`,
            );
          }
          if (String(mode).toLowerCase() !== "delete") {
            t.fail(
              `After close() returned on both stores on ${path}, the grader's own connection could not take the file for itself (PRAGMA journal_mode = DELETE left it in ${describeValue(mode)} mode): another connection still has it open. close() must close every SQLite connection the store opened (db.close()).`,
            );
          }
        } finally {
          g.close();
        }
      },
    },
  ],
});
