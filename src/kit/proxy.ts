import { createServer, connect as tcpConnect, type AddressInfo, type Server, type Socket } from "node:net";

/** One AMQP 0-9-1 frame as it crossed the proxy. */
export interface AmqpFrame {
  /** Which client connection of this proxy it belongs to: 1 for the first accepted, 2 for the next, … */
  link: number;
  type: number;
  channel: number;
  /** For method frames (type 1): the class and method ids, e.g. 60/80 for basic.ack. */
  classId: number | null;
  methodId: number | null;
  raw: Buffer;
}

export type Direction = "toBroker" | "toClient";

/** basic.ack (60/80) or basic.nack (60/120) from the broker: a publisher confirm. */
export const isConfirm = (f: AmqpFrame): boolean => f.type === 1 && f.classId === 60 && (f.methodId === 80 || f.methodId === 120);

const FRAME_END = 0xce;
const PROTOCOL_HEADER_LENGTH = 8; // "AMQP" 0 0 9 1, client to broker, once

/**
 * A TCP proxy between a learner's AMQP client and RabbitMQ, on an ephemeral port so parallel
 * runs never collide. It parses frames, so it can hold one kind of frame (say the broker's
 * confirms) while everything else, channel opening and declares included, flows: holding a
 * whole direction would make a fire-and-forget publisher look as if it waited.
 */
export class ChaosProxy {
  private readonly links = new Set<Link>();
  private linkCounter = 0;
  private brokerOpen = 0;
  private readonly gates: Record<Direction, Gate | null> = { toBroker: null, toClient: null };
  private holdRule: { direction: Direction; match: (f: AmqpFrame) => boolean } | null = null;
  private delayMs = 0;
  private paused = false;
  /** Every frame seen, for graders that need to know what crossed (bounded). */
  readonly seen: { direction: Direction; frame: Omit<AmqpFrame, "raw"> }[] = [];
  private taps: { direction: Direction; fn: (f: AmqpFrame) => void }[] = [];

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  static async start(target: { host: string; port: number }): Promise<ChaosProxy> {
    let proxy: ChaosProxy | undefined;
    const server = createServer((client) => proxy!.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    proxy = new ChaosProxy(server, (server.address() as AddressInfo).port, target);
    return proxy;
  }

  /** The same AMQP URL, pointed at the proxy. */
  urlFor(amqpUrl: string): string {
    const u = new URL(amqpUrl);
    u.hostname = "127.0.0.1";
    u.port = String(this.port);
    return u.toString();
  }

  /** Drops every connection at once, as a network failure would. New connections still work. */
  cut(): void {
    for (const link of this.links) link.destroy();
    this.links.clear();
  }

  /** @internal cuts one connection (see `Gate.drop`). */
  cutLink(id: number): void {
    for (const link of this.links) {
      if (link.id !== id) continue;
      link.destroy();
      this.links.delete(link);
    }
  }

  /** Stops forwarding in both directions; bytes wait in the proxy until `resume()`. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    for (const link of this.links) link.flush();
  }

  /** Holds frames going one way that match, in order, until `release()`; the rest flows. */
  hold(direction: Direction, match: (f: AmqpFrame) => boolean): void {
    this.holdRule = { direction, match };
  }

  /** Lets held frames go (in order) and stops holding. */
  release(): void {
    this.holdRule = null;
    for (const link of this.links) link.flush();
  }

  /**
   * Connections still open on the broker's side. When a client dies, the broker drops what it
   * held for that connection (exclusive queues, unacked deliveries) before this goes down.
   */
  get brokerConnections(): number {
    return this.brokerOpen;
  }

  /** How many frames are being held right now. */
  get heldCount(): number {
    let n = 0;
    for (const link of this.links) n += link.heldCount();
    return n;
  }

  /** Delays every frame by `ms` from now on (0 turns it off). */
  latency(ms: number): void {
    this.delayMs = ms;
  }

  /** Calls `fn` with every frame going one way, as it arrives (held or not). */
  tap(direction: Direction, fn: (f: AmqpFrame) => void): void {
    this.taps.push({ direction, fn });
  }

  /**
   * Stops one direction at a frame, on the connection it arrives on: from the first frame `at`
   * matches (taps have seen it by then), that frame and every later one going that way on that
   * connection wait here, in order, until the gate moves on or opens. Nothing else passes them,
   * so a content frame never overtakes its method. If the connection ends first, they are
   * dropped: they never reach the other side. This is how a grader kills a client "before this
   * frame is ever forwarded" (`gate.onStop(() => host.kill())`), or lets deliveries through one
   * at a time (`gate.moveTo(...)`). One gate per direction at a time; other connections flow.
   */
  stopAt(direction: Direction, at: (f: AmqpFrame) => boolean): Gate {
    if (this.gates[direction]) throw new Error(`ChaosProxy: a gate on ${direction} is already set; open it first`);
    const gate = new Gate(direction, at, () => {
      if (this.gates[direction] === gate) this.gates[direction] = null;
    });
    this.gates[direction] = gate;
    return gate;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket): void {
    const broker = tcpConnect(this.target);
    this.brokerOpen++;
    broker.once("close", () => this.brokerOpen--);
    const link = new Link(++this.linkCounter, client, broker, this);
    this.links.add(link);
    // The client went away (it closed, or its process died): what it had sent and the proxy
    // has not held goes on to the broker, then the broker sees the connection end, as it would
    // without a proxy in between. A network failure is `cut()`.
    const clientGone = () => {
      link.clientGone();
      this.links.delete(link);
    };
    const drop = () => {
      link.destroy();
      this.links.delete(link);
    };
    client.on("error", clientGone).on("close", clientGone);
    broker.on("error", drop).on("close", drop);
  }

  /** @internal decisions a Link asks its proxy for. */
  shouldHold(direction: Direction, f: AmqpFrame): boolean {
    return this.holdRule !== null && this.holdRule.direction === direction && this.holdRule.match(f);
  }
  /** @internal */
  shouldHoldAny(): boolean {
    return this.holdRule !== null;
  }
  /** @internal */
  get isPaused(): boolean {
    return this.paused;
  }
  /** @internal */
  get delay(): number {
    return this.delayMs;
  }
  /** @internal */
  observe(direction: Direction, f: AmqpFrame): void {
    for (const t of this.taps) if (t.direction === direction) t.fn(f);
    if (this.seen.length < 10_000) this.seen.push({ direction, frame: { link: f.link, type: f.type, channel: f.channel, classId: f.classId, methodId: f.methodId } });
  }
  /** @internal the gate that holds this frame (stopping there if it matches now), or null. */
  gateFor(direction: Direction, pipe: Pipe, f: AmqpFrame): Gate | null {
    const gate = this.gates[direction];
    if (!gate) return null;
    return gate.takes(pipe, f) ? gate : null;
  }
}

/** A stop on one direction of a proxy: see `ChaosProxy.stopAt`. */
export class Gate {
  private pipe: Pipe | null = null;
  private at: ((f: AmqpFrame) => boolean) | null;
  private readonly listeners: ((f: AmqpFrame) => void)[] = [];
  private resolveStopped!: (f: AmqpFrame) => void;
  /** Resolves with the frame the gate first stopped at. */
  readonly stopped: Promise<AmqpFrame>;
  /** The frame the gate holds first right now, or null when nothing is held. */
  stoppedAt: AmqpFrame | null = null;

  constructor(
    readonly direction: Direction,
    at: (f: AmqpFrame) => boolean,
    private readonly removed: () => void,
  ) {
    this.at = at;
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
  }

  /** Calls `fn` synchronously each time the gate stops at a frame, before any later frame is parsed. */
  onStop(fn: (f: AmqpFrame) => void): void {
    this.listeners.push(fn);
    if (this.stoppedAt) fn(this.stoppedAt);
  }

  /** How many frames wait at the gate. */
  get heldCount(): number {
    return this.pipe?.gated.length ?? 0;
  }

  /**
   * Lets the held frames before the first one `at` matches go on, and stops there (or, if none
   * matches, lets them all go and waits for a matching frame again).
   */
  moveTo(at: (f: AmqpFrame) => boolean): void {
    this.at = at;
    const pipe = this.pipe;
    if (!pipe) return;
    const i = pipe.gated.findIndex((f) => at(f));
    const passing = i < 0 ? pipe.gated.splice(0) : pipe.gated.splice(0, i);
    if (i < 0) {
      this.pipe = null;
      this.stoppedAt = null;
    } else {
      this.stop(pipe.gated[0]!);
    }
    pipe.passGated(passing);
  }

  /**
   * The process behind the stopped connection died at the gate: what the gate holds is thrown
   * away, the connection is cut (the broker sees it end now, not when the dead process's socket
   * is finally noticed), and the gate stops nothing more. `open()` here instead could forward a
   * dead process's held frames to the broker on a connection that is still up for a moment.
   */
  drop(): void {
    this.at = null;
    const pipe = this.pipe;
    this.pipe = null;
    this.stoppedAt = null;
    this.removed();
    if (pipe) {
      pipe.gated.splice(0);
      pipe.cutLink();
    }
  }

  /** Lets everything held go on, in order, and stops nothing more. */
  open(): void {
    this.at = null;
    const pipe = this.pipe;
    this.pipe = null;
    this.stoppedAt = null;
    this.removed();
    if (pipe) pipe.passGated(pipe.gated.splice(0));
  }

  /** @internal */
  takes(pipe: Pipe, f: AmqpFrame): boolean {
    if (this.pipe) return this.pipe === pipe;
    if (!this.at || !this.at(f)) return false;
    this.pipe = pipe;
    this.stop(f);
    return true;
  }

  private stop(f: AmqpFrame): void {
    this.stoppedAt = f;
    this.resolveStopped(f); // a no-op after the first time
    for (const fn of this.listeners) fn(f);
  }
}

/** One client connection and its broker connection, with a frame parser for each direction. */
class Link {
  private readonly pipes: Record<Direction, Pipe>;
  private dead = false;

  constructor(
    readonly id: number,
    private readonly client: Socket,
    private readonly broker: Socket,
    proxy: ChaosProxy,
  ) {
    this.pipes = {
      toBroker: new Pipe("toBroker", broker, proxy, PROTOCOL_HEADER_LENGTH, id),
      toClient: new Pipe("toClient", client, proxy, 0, id),
    };
    client.on("data", (chunk: Buffer) => this.pipes.toBroker.push(chunk));
    broker.on("data", (chunk: Buffer) => this.pipes.toClient.push(chunk));
  }

  flush(): void {
    this.pipes.toBroker.flush();
    this.pipes.toClient.flush();
  }

  heldCount(): number {
    return this.pipes.toBroker.held.length + this.pipes.toClient.held.length;
  }

  destroy(): void {
    if (this.dead) return;
    this.dead = true;
    this.client.destroy();
    this.broker.destroy();
  }

  /** The client's end closed: forward what is neither held nor gated, then end the broker side. */
  clientGone(): void {
    if (this.dead) return;
    this.dead = true;
    this.client.destroy();
    this.pipes.toBroker.flush();
    this.broker.end();
    setTimeout(() => this.broker.destroy(), 2000).unref();
  }
}

class Pipe {
  private buffer = Buffer.alloc(0);
  /** Frames parsed but not yet sent because the proxy is paused or delaying. */
  private queue: Buffer[] = [];
  /** Frames held by the hold rule, sent on release. */
  readonly held: Buffer[] = [];
  /** Frames stopped at a gate (see ChaosProxy.stopAt), in order. */
  readonly gated: AmqpFrame[] = [];
  private sending = false;

  constructor(
    private readonly direction: Direction,
    private readonly out: Socket,
    private readonly proxy: ChaosProxy,
    private headerBytes: number,
    private readonly link: number,
  ) {}

  /** @internal */
  cutLink(): void {
    this.proxy.cutLink(this.link);
  }

  /** Frames a gate lets go: they pass through the hold rule like fresh ones, then out. */
  passGated(frames: AmqpFrame[]): void {
    for (const f of frames) {
      if (this.proxy.shouldHold(this.direction, f)) this.held.push(f.raw);
      else this.queue.push(f.raw);
    }
    this.flush();
  }

  push(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    if (this.headerBytes > 0) {
      if (this.buffer.length < this.headerBytes) return;
      this.queue.push(this.buffer.subarray(0, this.headerBytes));
      this.buffer = this.buffer.subarray(this.headerBytes);
      this.headerBytes = 0;
    }
    while (this.buffer.length >= 7) {
      const size = this.buffer.readUInt32BE(3);
      const total = 7 + size + 1;
      if (this.buffer.length < total) break;
      const raw = Buffer.from(this.buffer.subarray(0, total));
      this.buffer = this.buffer.subarray(total);
      if (raw[total - 1] !== FRAME_END) {
        // Not AMQP framing after all (or corrupted): stop parsing and pass bytes through.
        this.queue.push(raw, this.buffer);
        this.buffer = Buffer.alloc(0);
        break;
      }
      const type = raw[0]!;
      const frame: AmqpFrame = {
        link: this.link,
        type,
        channel: raw.readUInt16BE(1),
        classId: type === 1 && size >= 4 ? raw.readUInt16BE(7) : null,
        methodId: type === 1 && size >= 4 ? raw.readUInt16BE(9) : null,
        raw,
      };
      this.proxy.observe(this.direction, frame);
      if (this.gated.length > 0 || this.proxy.gateFor(this.direction, this, frame)) this.gated.push(frame);
      else if (this.proxy.shouldHold(this.direction, frame)) this.held.push(raw);
      else this.queue.push(raw);
    }
    this.flush();
  }

  flush(): void {
    if (!this.proxy.shouldHoldAny() && this.held.length) this.queue.unshift(...this.held.splice(0));
    if (this.proxy.isPaused || this.sending || this.out.destroyed || this.out.writableEnded) return;
    const delay = this.proxy.delay;
    if (delay > 0 && this.queue.length) {
      this.sending = true;
      const batch = this.queue.splice(0);
      setTimeout(() => {
        this.sending = false;
        if (!this.out.destroyed && !this.out.writableEnded) this.out.write(Buffer.concat(batch));
        this.flush();
      }, delay);
      return;
    }
    if (this.queue.length && !this.out.destroyed) this.out.write(Buffer.concat(this.queue.splice(0)));
  }
}
