import { send, type ResourceKind } from "../grading/protocol.ts";

/**
 * Unique names for one check of one grading run. Every name is reported to the engine
 * before the resource exists, so the engine can delete it even if this process is killed.
 */
export class Namespace {
  readonly created: { kind: ResourceKind; name: string }[] = [];
  constructor(readonly prefix: string) {}

  private make(kind: ResourceKind, base: string): string {
    const name = `${this.prefix}.${base}`;
    if (!this.created.some((r) => r.kind === kind && r.name === name)) {
      this.created.push({ kind, name });
      send({ type: "resource", kind, name });
    }
    return name;
  }

  queue(base: string): string {
    return this.make("queue", base);
  }
  exchange(base: string): string {
    return this.make("exchange", base);
  }
  topic(base: string): string {
    return this.make("topic", base);
  }
  group(base: string): string {
    return this.make("group", base);
  }
  /** Transactional ids expire on the broker by themselves; they only need to be unique. */
  transactionalId(base: string): string {
    return `${this.prefix}.${base}`;
  }
}
