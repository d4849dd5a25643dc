/**
 * What a grader holds of a submission host: a process, sandboxed, that runs only the learner's
 * module. The grader calls the learner's exports with plain data, callbacks into itself and
 * capabilities the host builds on its side (a channel to the grader's proxy, a database in the
 * host's folder). It can SIGKILL a host at any point, start another, and run several at once.
 */
import type { PendingTimer } from "./timers.ts";
import type { HostEnd, HostProcess } from "../grading/host-process.ts";
import { HostGone } from "../grading/host-process.ts";
import { markSync } from "../host/wire.ts";
import { endpointOf, type Gateway } from "./gateway.ts";

export { HostGone, markSync };
export type { HostEnd };

/** A capability or object living in the host: pass it back as an argument, or call its methods. */
export type Remote<T = Record<string, unknown>> = T;

/** How a host without network reaches the brokers (see gateway.ts). */
export interface HostRoutes {
  gateway: Gateway;
  /** Every broker address of the Kafka cluster (kafkajs connects to what metadata advertises). */
  kafkaBrokers(): Promise<string[]>;
}

export class Host {
  constructor(
    private readonly proc: HostProcess,
    /** Which host of the check this is: 1, 2, … */
    readonly index: number,
    /** Null when the host has network (Node's permission model alone). */
    private readonly routes: HostRoutes | null = null,
  ) {}

  /** What the module exports: name → "function" | "class" | "object" | … */
  get exports(): Promise<Record<string, string>> {
    return this.proc.ready;
  }

  /** Calls an export; resolves with what it returned, a returned promise followed. */
  call<T = unknown>(name: string, ...args: unknown[]): Promise<T> {
    return this.proc.call({ export: name }, args) as Promise<T>;
  }

  /**
   * Calls an export and resolves at once with `{ value }`: a returned promise is left as it is,
   * so the grader can see it settle late, or never.
   */
  start(name: string, ...args: unknown[]): Promise<{ value: unknown }> {
    return this.proc.peer.call({ export: name }, args, true) as Promise<{ value: unknown }>;
  }

  /**
   * Builds a capability inside the host (see src/host/caps.ts for the kinds). Broker addresses
   * are the grader's to choose (the broker, or a proxy in front of it); a host without network
   * gets a gateway socket for each.
   */
  async cap<T = Remote>(kind: string, opts: Record<string, unknown> = {}): Promise<T> {
    return this.proc.call({ cap: kind }, [await this.route(kind, opts)]) as Promise<T>;
  }

  private async route(kind: string, opts: Record<string, unknown>): Promise<Record<string, unknown>> {
    const r = this.routes;
    if (!r) return opts;
    if (kind.startsWith("amqp.") && typeof opts.url === "string") {
      const { host, port } = endpointOf(opts.url);
      return { ...opts, socketPath: await r.gateway.socketFor(host, port) };
    }
    if (kind === "kafka.client") {
      const given = Array.isArray(opts.brokers) ? (opts.brokers as string[]) : [];
      const all = [...new Set([...given, ...(await r.kafkaBrokers())])];
      const socketMap: Record<string, string> = {};
      for (const b of all) {
        const { host, port } = endpointOf(b);
        socketMap[b] = await r.gateway.socketFor(host, port);
      }
      const out: Record<string, unknown> = { ...opts, socketMap };
      if (typeof opts.via === "string") {
        const { host, port } = endpointOf(opts.via);
        out.viaPath = await r.gateway.socketFor(host, port);
      }
      return out;
    }
    return opts;
  }

  /**
   * Lets the host's event loop turn a few times and answers: whatever the learner's code does
   * right after the last thing the grader did has happened, and reached the grader, by then.
   */
  async turns(n = 5): Promise<void> {
    await this.proc.call({ builtin: "turns" }, [n]);
  }

  /**
   * The timeouts and intervals the learner's code has pending now (made since its module loaded,
   * not yet fired or cleared, unref'd ones included), longest delay first. The host records them
   * (src/host/timers.ts), so this is the learner's own process reporting: use it to find work
   * left scheduled after a request, and let the verdict rest on what that work would do.
   */
  async timers(): Promise<PendingTimer[]> {
    return (await this.proc.call({ builtin: "timers" }, [])) as PendingTimer[];
  }

  /** SIGKILL, now. Calls still waiting reject with HostGone. */
  kill(): Promise<HostEnd> {
    return this.proc.kill();
  }

  get exited(): Promise<HostEnd> {
    return this.proc.exited;
  }

  get alive(): boolean {
    return this.proc.alive;
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** The tail of what the learner's code printed in this host. */
  tail(lines = 8): string {
    return this.proc.tail(lines);
  }

  /** Errors that escaped the learner's code in this host. */
  get escaped(): unknown[] {
    return this.proc.escaped;
  }

  /** The host's folder, for files the learner's code gets (SQLite databases): the grader reads them there too. */
  get dir(): string {
    return this.proc.spec.dir;
  }
}

/** Marks a callback the host calls synchronously (it blocks until the grader has answered). */
export const sync = markSync;
