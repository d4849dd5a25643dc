/**
 * Reading what the learner's process has scheduled (`host.timers()`, recorded by the host since
 * the learner's module loaded). Libraries keep timers of their own (amqplib's heartbeats,
 * kafkajs's request-timeout sweep, both intervals), so a grader compares against a snapshot
 * taken before the code under test ran and looks only at one-shot timers: a timeout that races a
 * confirm, a deadline left running after its publish settled.
 */
import type { PendingTimer } from "../host/timers.ts";

export type { PendingTimer };

/**
 * The one-shot timers (timeouts, timers/promises sleeps) in `now` that were not in `before`,
 * matched as a multiset by kind, delay and callback source, of at least `minMs`; longest first.
 * Intervals are left out: a sweep of one's own is a design, not a leak.
 */
export function newTimers<X extends PendingTimer>(before: readonly X[], now: readonly X[], minMs = 0): X[] {
  const key = (x: X) => `${x.kind}|${x.ms}|${x.callback}`;
  const seen = new Map<string, number>();
  for (const x of before) seen.set(key(x), (seen.get(key(x)) ?? 0) + 1);
  return now
    .filter((x) => {
      const n = seen.get(key(x)) ?? 0;
      if (n > 0) {
        seen.set(key(x), n - 1);
        return false;
      }
      return x.kind !== "interval" && x.ms >= minMs;
    })
    .sort((a, b) => b.ms - a.ms);
}
