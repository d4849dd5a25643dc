/**
 * A record of what happened to each message, and the properties a messaging pattern promises.
 * Each check returns null when the property holds, or a minimal counterexample for a learner:
 * "message m-57 applied twice (deliveries 3 and 9)".
 */
export type HistoryKind = "produced" | "delivered" | "acked" | "committed" | "applied" | "dead-lettered";

export interface HistoryEvent {
  kind: HistoryKind;
  id: string;
  key?: string | undefined;
  /** Position in the producer's sequence for its key, for ordering checks. */
  seq?: number | undefined;
  /** Which delivery (1-based, counted by the history) an event belongs to. */
  delivery?: number | undefined;
  /** Global order of recording. */
  at: number;
}

export class History {
  readonly events: HistoryEvent[] = [];
  private deliveries = 0;

  record(kind: HistoryKind, id: string, extra: { key?: string; seq?: number } = {}): HistoryEvent {
    const e: HistoryEvent = { kind, id, key: extra.key, seq: extra.seq, at: this.events.length + 1 };
    if (kind === "delivered") e.delivery = ++this.deliveries;
    else {
      // Later kinds belong to the most recent delivery of that id.
      const last = [...this.events].reverse().find((x) => x.kind === "delivered" && x.id === id);
      if (last) e.delivery = last.delivery;
    }
    this.events.push(e);
    return e;
  }

  of(kind: HistoryKind): HistoryEvent[] {
    return this.events.filter((e) => e.kind === kind);
  }

  /** Every produced message was applied at least once. */
  noLoss(): string | null {
    const applied = new Set(this.of("applied").map((e) => e.id));
    const lost = this.of("produced").filter((e) => !applied.has(e.id));
    if (lost.length === 0) return null;
    const ids = lost.slice(0, 3).map((e) => e.id);
    return `message ${ids.join(", ")}${lost.length > 3 ? ` and ${lost.length - 3} more` : ""} ${lost.length === 1 ? "was" : "were"} never applied (${lost.length} of ${this.of("produced").length} lost)`;
  }

  /** No message's effect happened twice. */
  noDuplicateEffect(): string | null {
    const seen = new Map<string, HistoryEvent>();
    for (const e of this.of("applied")) {
      const first = seen.get(e.id);
      if (first) return `message ${e.id} applied twice (${describeDelivery(first)} and ${describeDelivery(e)})`;
      seen.set(e.id, e);
    }
    return null;
  }

  /** For each key, effects happened in the producer's order. */
  orderPerKey(kind: HistoryKind = "applied"): string | null {
    const last = new Map<string, HistoryEvent>();
    for (const e of this.of(kind)) {
      if (e.key === undefined || e.seq === undefined) continue;
      const prev = last.get(e.key);
      if (prev && prev.seq! > e.seq) return `key ${e.key}: message ${e.id} (#${e.seq}) was ${kind} after ${prev.id} (#${prev.seq})`;
      last.set(e.key, e);
    }
    return null;
  }

  /** The dead-letter queue holds exactly the poison messages: none missing, none extra. */
  deadLettersEqual(poison: Iterable<string>): string | null {
    const expected = new Set(poison);
    const actual = new Set(this.of("dead-lettered").map((e) => e.id));
    const missing = [...expected].filter((id) => !actual.has(id));
    const extra = [...actual].filter((id) => !expected.has(id));
    if (missing.length) return `poison message ${missing[0]} never reached the dead-letter queue${missing.length > 1 ? ` (${missing.length} missing)` : ""}`;
    if (extra.length) return `message ${extra[0]} was dead-lettered but is not poison${extra.length > 1 ? ` (${extra.length} such)` : ""}`;
    return null;
  }
}

function describeDelivery(e: HistoryEvent): string {
  return e.delivery !== undefined ? `delivery ${e.delivery}` : `event ${e.at}`;
}
