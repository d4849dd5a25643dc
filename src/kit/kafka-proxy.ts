/**
 * A TCP proxy in front of ONE Kafka broker, owned by a grader, that frames every request a
 * client sends (4-byte size, api key, api version, correlation id, client id) and lets the
 * grader look at it before it goes on: forward it, hold it (the connection's later requests
 * wait behind it, so order is kept), or drop it so it never reaches the broker (the grader
 * SIGKILLs the client's process while the request is held: the commit never arrives).
 *
 * A learner's kafkajs client gets here through the `kafka.client` capability's `via` option: its
 * socket factory sends every broker connection to the proxy, whatever address the metadata
 * advertised. With a single broker behind it that is exact (the proxy forwards everything to
 * the one broker); a cluster of several would need one proxy per broker.
 *
 * It also decodes what graders need of the protocol: OffsetCommit (v0 to v7), TxnOffsetCommit
 * (v0 to v2), Fetch (v0 to v11), JoinGroup (v0 to v5), EndTxn and the Produce header, and it
 * can send a LeaveGroup for a member that died without one (see `leaveGroup`).
 */
import { createServer, connect as tcpConnect, type AddressInfo, type Server, type Socket } from "node:net";

export const ApiKey = {
  Produce: 0,
  Fetch: 1,
  ListOffsets: 2,
  Metadata: 3,
  OffsetCommit: 8,
  OffsetFetch: 9,
  FindCoordinator: 10,
  JoinGroup: 11,
  Heartbeat: 12,
  LeaveGroup: 13,
  SyncGroup: 14,
  DescribeGroups: 15,
  ApiVersions: 18,
  InitProducerId: 22,
  AddPartitionsToTxn: 24,
  AddOffsetsToTxn: 25,
  EndTxn: 26,
  TxnOffsetCommit: 28,
} as const;

const API_NAMES = new Map<number, string>(Object.entries(ApiKey).map(([name, key]) => [key, name]));

/** "OffsetCommit", or "api 42" for a key this file does not name. */
export function apiName(apiKey: number): string {
  return API_NAMES.get(apiKey) ?? `api ${apiKey}`;
}

/**
 * Requests that change what the broker keeps: records, committed offsets, transactions. Holding
 * all of them (and dropping them with a kill) freezes the client's durable effect on Kafka.
 */
export const DURABLE_APIS: ReadonlySet<number> = new Set([
  ApiKey.Produce,
  ApiKey.OffsetCommit,
  ApiKey.AddPartitionsToTxn,
  ApiKey.AddOffsetsToTxn,
  ApiKey.EndTxn,
  ApiKey.TxnOffsetCommit,
]);

/**
 * The first request version that uses the flexible header (tagged fields after the client id),
 * per api. kafkajs 2.2 sends none of them; they are known so that the body offset stays right.
 */
const FIRST_FLEXIBLE: Record<number, number> = {
  0: 9, 1: 12, 2: 6, 3: 9, 8: 8, 9: 6, 10: 3, 11: 6, 12: 4, 13: 4, 14: 4, 15: 5, 18: 3,
  19: 5, 20: 4, 22: 2, 24: 3, 25: 3, 26: 3, 28: 3, 32: 4, 42: 2,
};

/** One request, as it reached the proxy. */
export interface KafkaRequest {
  /** 1, 2, … across the proxy, in arrival order. */
  readonly seq: number;
  /** The client connection it came on (1, 2, … in accept order). */
  readonly conn: number;
  readonly apiKey: number;
  readonly apiVersion: number;
  readonly correlationId: number;
  readonly clientId: string | null;
  /** The whole frame, size prefix included, as it will be forwarded. */
  readonly frame: Buffer;
  /** Where the request body starts in `frame`. */
  readonly bodyOffset: number;
  /** performance.now() when it arrived. */
  readonly at: number;
  /** The broker's answer (the whole frame), once it came. Never settles for a dropped request. */
  readonly response: Promise<Buffer>;
}

/** What to do with a request: pass it on, or drop it (it never reaches the broker). */
export type Verdict = "forward" | "drop";

/**
 * The grader's say on each request. Return nothing (or "forward") to pass it on at once; a
 * promise holds it, and every later request of the same connection behind it, until it settles.
 */
export type RequestHandler = (req: KafkaRequest) => Verdict | void | Promise<Verdict>;

export interface KafkaProxyOptions {
  /**
   * Caps Fetch's max_wait_ms (the broker's long poll) at this many ms. A client that has caught
   * up then gets an empty answer quickly, so its disconnect does not wait out a 5 s poll. It
   * changes latency only: a fetch with data answers at once either way.
   */
  fetchMaxWaitMs?: number;
}

function parseHost(hostPort: string): { host: string; port: number } {
  const i = hostPort.lastIndexOf(":");
  if (i < 0) throw new TypeError(`"${hostPort}" is not host:port`);
  return { host: hostPort.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(hostPort.slice(i + 1)) };
}

/** Reads the request header of a framed request (size prefix included). */
export function parseRequestHeader(frame: Buffer): { apiKey: number; apiVersion: number; correlationId: number; clientId: string | null; bodyOffset: number } {
  const apiKey = frame.readInt16BE(4);
  const apiVersion = frame.readInt16BE(6);
  const correlationId = frame.readInt32BE(8);
  const n = frame.readInt16BE(12);
  const clientId = n < 0 ? null : frame.toString("utf8", 14, 14 + n);
  let bodyOffset = 14 + Math.max(n, 0);
  const flexibleFrom = FIRST_FLEXIBLE[apiKey];
  if (flexibleFrom !== undefined && apiVersion >= flexibleFrom) {
    const r = new Reader(frame, bodyOffset);
    r.skipTaggedFields();
    bodyOffset = r.pos;
  }
  return { apiKey, apiVersion, correlationId, clientId, bodyOffset };
}

/** A cursor over a Kafka protocol buffer (non-flexible encodings). */
class Reader {
  constructor(
    readonly buf: Buffer,
    public pos: number,
  ) {}
  int8(): number {
    const v = this.buf.readInt8(this.pos);
    this.pos += 1;
    return v;
  }
  int16(): number {
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  int32(): number {
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  int64(): bigint {
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  /** STRING / NULLABLE_STRING (int16 length, -1 for null). */
  string(): string | null {
    const n = this.int16();
    if (n < 0) return null;
    const s = this.buf.toString("utf8", this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  bytes(): Buffer | null {
    const n = this.int32();
    if (n < 0) return null;
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  array<T>(item: () => T): T[] {
    const n = this.int32();
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(item());
    return out;
  }
  uvarint(): number {
    let v = 0;
    let shift = 0;
    for (;;) {
      const b = this.buf.readUInt8(this.pos++);
      v |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return v >>> 0;
      shift += 7;
    }
  }
  skipTaggedFields(): void {
    const n = this.uvarint();
    for (let i = 0; i < n; i++) {
      this.uvarint();
      this.pos += this.uvarint();
    }
  }
}

function bodyReader(req: Pick<KafkaRequest, "frame" | "bodyOffset">): Reader {
  return new Reader(req.frame, req.bodyOffset);
}

// ---------------------------------------------------------------------------------------------
// Decoders: each returns null for another api, or a version it does not know.

/** One partition's offset in a commit request. */
export interface CommitEntry {
  topic: string;
  partition: number;
  /** The committed offset: the NEXT record to read, as a decimal string. */
  offset: string;
}

export interface OffsetCommitSeen {
  version: number;
  groupId: string;
  generationId: number | null;
  memberId: string | null;
  entries: CommitEntry[];
}

/** Decodes an OffsetCommit request, versions 0 to 7 (kafkajs 2.2 sends up to 5). */
export function decodeOffsetCommit(req: Pick<KafkaRequest, "apiKey" | "apiVersion" | "frame" | "bodyOffset">): OffsetCommitSeen | null {
  const v = req.apiVersion;
  if (req.apiKey !== ApiKey.OffsetCommit || v > 7) return null;
  const r = bodyReader(req);
  const groupId = r.string() ?? "";
  let generationId: number | null = null;
  let memberId: string | null = null;
  if (v >= 1) {
    generationId = r.int32();
    memberId = r.string();
  }
  if (v >= 7) r.string(); // group instance id
  if (v >= 2 && v <= 4) r.int64(); // retention time
  const entries: CommitEntry[] = [];
  r.array(() => {
    const topic = r.string() ?? "";
    r.array(() => {
      const partition = r.int32();
      const offset = r.int64().toString();
      if (v >= 6) r.int32(); // committed leader epoch
      if (v === 1) r.int64(); // commit timestamp
      r.string(); // metadata
      entries.push({ topic, partition, offset });
    });
  });
  return { version: v, groupId, generationId, memberId, entries };
}

export interface TxnOffsetCommitSeen {
  version: number;
  transactionalId: string;
  groupId: string;
  entries: CommitEntry[];
}

/** Decodes a TxnOffsetCommit request (offsets committed inside a producer's transaction), versions 0 to 2. */
export function decodeTxnOffsetCommit(req: Pick<KafkaRequest, "apiKey" | "apiVersion" | "frame" | "bodyOffset">): TxnOffsetCommitSeen | null {
  const v = req.apiVersion;
  if (req.apiKey !== ApiKey.TxnOffsetCommit || v > 2) return null;
  const r = bodyReader(req);
  const transactionalId = r.string() ?? "";
  const groupId = r.string() ?? "";
  r.int64(); // producer id
  r.int16(); // producer epoch
  const entries: CommitEntry[] = [];
  r.array(() => {
    const topic = r.string() ?? "";
    r.array(() => {
      const partition = r.int32();
      const offset = r.int64().toString();
      if (v >= 2) r.int32(); // committed leader epoch
      r.string(); // metadata
      entries.push({ topic, partition, offset });
    });
  });
  return { version: v, transactionalId, groupId, entries };
}

export interface FetchSeen {
  version: number;
  maxWaitMs: number;
  /** 0 read_uncommitted, 1 read_committed; null before v4 (always read_uncommitted). */
  isolationLevel: number | null;
  partitions: { topic: string; partition: number; fetchOffset: bigint }[];
}

/** Decodes a Fetch request, versions 0 to 11 (kafkajs 2.2 sends up to 11). */
export function decodeFetch(req: Pick<KafkaRequest, "apiKey" | "apiVersion" | "frame" | "bodyOffset">): FetchSeen | null {
  const v = req.apiVersion;
  if (req.apiKey !== ApiKey.Fetch || v > 11) return null;
  const r = bodyReader(req);
  r.int32(); // replica id
  const maxWaitMs = r.int32();
  r.int32(); // min bytes
  if (v >= 3) r.int32(); // max bytes
  const isolationLevel = v >= 4 ? r.int8() : null;
  if (v >= 7) {
    r.int32(); // session id
    r.int32(); // session epoch
  }
  const partitions: FetchSeen["partitions"] = [];
  r.array(() => {
    const topic = r.string() ?? "";
    r.array(() => {
      const partition = r.int32();
      if (v >= 9) r.int32(); // current leader epoch
      const fetchOffset = r.int64();
      if (v >= 5) r.int64(); // log start offset
      r.int32(); // partition max bytes
      partitions.push({ topic, partition, fetchOffset });
    });
  });
  return { version: v, maxWaitMs, isolationLevel, partitions };
}

export interface JoinGroupSeen {
  version: number;
  groupId: string;
  sessionTimeoutMs: number;
  memberId: string;
}

/** Decodes a JoinGroup request, versions 0 to 5. */
export function decodeJoinGroup(req: Pick<KafkaRequest, "apiKey" | "apiVersion" | "frame" | "bodyOffset">): JoinGroupSeen | null {
  const v = req.apiVersion;
  if (req.apiKey !== ApiKey.JoinGroup || v > 5) return null;
  const r = bodyReader(req);
  const groupId = r.string() ?? "";
  const sessionTimeoutMs = r.int32();
  if (v >= 1) r.int32(); // rebalance timeout
  const memberId = r.string() ?? "";
  return { version: v, groupId, sessionTimeoutMs, memberId };
}

/** Decodes an EndTxn request (a producer's commit or abort), versions 0 to 2. */
export function decodeEndTxn(req: Pick<KafkaRequest, "apiKey" | "apiVersion" | "frame" | "bodyOffset">): { transactionalId: string; committed: boolean } | null {
  if (req.apiKey !== ApiKey.EndTxn || req.apiVersion > 2) return null;
  const r = bodyReader(req);
  const transactionalId = r.string() ?? "";
  r.int64();
  r.int16();
  return { transactionalId, committed: r.int8() !== 0 };
}

/** The head of a Produce request (v0 to v8): its transactional id (v3+), acks, and the topics it writes. */
export function decodeProduceHeader(req: Pick<KafkaRequest, "apiKey" | "apiVersion" | "frame" | "bodyOffset">): { transactionalId: string | null; acks: number; topics: string[] } | null {
  const v = req.apiVersion;
  if (req.apiKey !== ApiKey.Produce || v > 8) return null;
  const r = bodyReader(req);
  const transactionalId = v >= 3 ? r.string() : null;
  const acks = r.int16();
  r.int32(); // timeout
  const topics = r.array(() => {
    const topic = r.string() ?? "";
    r.array(() => {
      r.int32();
      r.bytes();
    });
    return topic;
  });
  return { transactionalId, acks, topics };
}

/** A short description for messages: "OffsetCommit v5 (correlation 12)". */
export function describeRequest(req: KafkaRequest): string {
  return `${apiName(req.apiKey)} v${req.apiVersion} (correlation ${req.correlationId})`;
}

// ---------------------------------------------------------------------------------------------

interface Pending {
  req: KafkaRequest;
  resolve: (frame: Buffer) => void;
}

/** One client connection and its upstream twin. */
class Link {
  private buf: Buffer = Buffer.alloc(0);
  private upBuf: Buffer = Buffer.alloc(0);
  private readonly queue: Buffer[] = [];
  private busy = false;
  closed = false;
  private readonly inflight = new Map<number, Pending>();

  constructor(
    readonly id: number,
    private readonly client: Socket,
    private readonly upstream: Socket,
    private readonly proxy: KafkaProxy,
  ) {
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.on("data", (d: Buffer) => this.fromClient(d));
    upstream.on("data", (d: Buffer) => this.fromBroker(d));
    const end = () => this.destroy();
    client.on("close", end);
    upstream.on("close", end);
    client.on("error", end);
    upstream.on("error", end);
  }

  private fromClient(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    while (this.buf.length >= 4) {
      const size = this.buf.readInt32BE(0);
      if (this.buf.length < 4 + size) break;
      this.queue.push(this.buf.subarray(0, 4 + size));
      this.buf = this.buf.subarray(4 + size);
    }
    void this.pump();
  }

  /** Handles queued requests strictly in order; a held one blocks those behind it. */
  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.queue.length && !this.closed) {
        const raw = this.queue.shift()!;
        const frame = Buffer.from(raw); // a copy of its own: rewrites never touch a shared buffer
        let head: ReturnType<typeof parseRequestHeader>;
        try {
          head = parseRequestHeader(frame);
        } catch {
          // Not a Kafka request: nothing a broker would take either.
          this.proxy.malformed++;
          this.destroy();
          return;
        }
        this.proxy.rewrite(head, frame);
        let resolve!: (f: Buffer) => void;
        const response = new Promise<Buffer>((r) => (resolve = r));
        const req: KafkaRequest = { seq: this.proxy.nextSeq(), conn: this.id, ...head, frame, at: performance.now(), response };
        let verdict: Verdict | void | Promise<Verdict>;
        try {
          verdict = this.proxy.handler?.(req);
        } catch (e) {
          this.proxy.reportError(e);
          verdict = "forward";
        }
        if (verdict && typeof (verdict as Promise<Verdict>).then === "function") {
          try {
            verdict = await verdict;
          } catch (e) {
            this.proxy.reportError(e);
            verdict = "drop";
          }
        }
        // A connection that closed while its request was held forwards nothing (its process died).
        if (this.closed) return;
        if (verdict === "drop") continue;
        this.inflight.set(req.correlationId, { req, resolve });
        this.upstream.write(frame);
      }
    } finally {
      this.busy = false;
    }
  }

  private fromBroker(d: Buffer): void {
    this.upBuf = this.upBuf.length ? Buffer.concat([this.upBuf, d]) : d;
    while (this.upBuf.length >= 8) {
      const size = this.upBuf.readInt32BE(0);
      if (this.upBuf.length < 4 + size) break;
      const frame = this.upBuf.subarray(0, 4 + size);
      this.upBuf = this.upBuf.subarray(4 + size);
      const correlationId = frame.readInt32BE(4);
      const pending = this.inflight.get(correlationId);
      this.inflight.delete(correlationId);
      if (!this.closed) this.client.write(frame);
      pending?.resolve(Buffer.from(frame));
    }
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.client.destroy();
    this.upstream.destroy();
    this.proxy.forget(this);
  }
}

export class KafkaProxy {
  private readonly links = new Set<Link>();
  private seq = 0;
  private connSeq = 0;
  /** The grader's say on each request (see RequestHandler). */
  handler: RequestHandler | null = null;
  /** Errors thrown by the handler (the request is forwarded, or dropped if a held promise rejected). */
  readonly errors: unknown[] = [];
  /** How many client connections were ever accepted. */
  accepted = 0;
  /** Connections dropped because what came on them was not framed Kafka requests. */
  malformed = 0;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly target: { host: string; port: number },
    private readonly opts: KafkaProxyOptions,
  ) {}

  /** Listens on an ephemeral port of 127.0.0.1, forwarding to `upstream` ("host:port" of the one broker). */
  static async start(upstream: string, opts: KafkaProxyOptions = {}): Promise<KafkaProxy> {
    let proxy: KafkaProxy | undefined;
    const server = createServer((client) => proxy!.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    proxy = new KafkaProxy(server, (server.address() as AddressInfo).port, parseHost(upstream), opts);
    return proxy;
  }

  /** "127.0.0.1:<port>": what the `kafka.client` capability's `via` takes. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Client connections open now. */
  get openConnections(): number {
    return this.links.size;
  }

  private accept(client: Socket): void {
    const upstream = tcpConnect(this.target);
    this.accepted++;
    this.links.add(new Link(++this.connSeq, client, upstream, this));
  }

  /** @internal */
  nextSeq(): number {
    return ++this.seq;
  }

  /** @internal */
  forget(link: Link): void {
    this.links.delete(link);
  }

  /** @internal */
  reportError(e: unknown): void {
    this.errors.push(e);
  }

  /** @internal Applies the proxy's rewrites to a request before the handler sees it. */
  rewrite(head: { apiKey: number; apiVersion: number; bodyOffset: number }, frame: Buffer): void {
    const cap = this.opts.fetchMaxWaitMs;
    if (cap !== undefined && head.apiKey === ApiKey.Fetch && head.apiVersion <= 11) {
      // Fetch: replica_id (int32), then max_wait_ms (int32), in every non-flexible version.
      const at = head.bodyOffset + 4;
      if (frame.readInt32BE(at) > cap) frame.writeInt32BE(cap, at);
    }
  }

  /** Drops every connection at once, as a network failure would; new connections still work. */
  cut(): void {
    for (const link of [...this.links]) link.destroy();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------------------
// A minimal client of the grader's own, for what kafkajs's admin cannot do.

/** Sends framed requests on one connection and reads the answers in order. */
class RawConnection {
  private buf: Buffer = Buffer.alloc(0);
  private readonly waiting: { resolve: (b: Buffer) => void; reject: (e: Error) => void }[] = [];
  private correlation = 0;
  private failure: Error | null = null;

  private constructor(private readonly socket: Socket) {
    socket.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readInt32BE(0)) {
        const size = this.buf.readInt32BE(0);
        const frame = this.buf.subarray(0, 4 + size);
        this.buf = this.buf.subarray(4 + size);
        this.waiting.shift()?.resolve(frame);
      }
    });
    const fail = (e?: Error) => {
      this.failure ??= e ?? new Error("the broker closed the connection");
      for (const w of this.waiting.splice(0)) w.reject(this.failure);
    };
    socket.on("error", fail);
    socket.on("close", () => fail());
  }

  static open(broker: string, timeoutMs: number): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const socket = tcpConnect(parseHost(broker));
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no connection to ${broker} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve(new RawConnection(socket));
      });
      socket.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  /** Sends one non-flexible request; resolves with the response body (after the correlation id). */
  request(apiKey: number, apiVersion: number, body: Buffer): Promise<Reader> {
    if (this.failure) return Promise.reject(this.failure);
    const clientId = Buffer.from("msglab-grader");
    const head = Buffer.alloc(14);
    head.writeInt32BE(10 + clientId.length + body.length, 0);
    head.writeInt16BE(apiKey, 4);
    head.writeInt16BE(apiVersion, 6);
    head.writeInt32BE(++this.correlation, 8);
    head.writeInt16BE(clientId.length, 12);
    const answer = new Promise<Buffer>((resolve, reject) => this.waiting.push({ resolve, reject }));
    this.socket.write(Buffer.concat([head, clientId, body]));
    return answer.then((frame) => new Reader(frame, 8));
  }

  close(): void {
    this.socket.destroy();
  }
}

function encString(s: string | null): Buffer {
  if (s === null) {
    const b = Buffer.alloc(2);
    b.writeInt16BE(-1, 0);
    return b;
  }
  const v = Buffer.from(s, "utf8");
  const b = Buffer.alloc(2 + v.length);
  b.writeInt16BE(v.length, 0);
  v.copy(b, 2);
  return b;
}

function encInt32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n, 0);
  return b;
}

/**
 * Removes members from a consumer group at once, as the broker would after their session timed
 * out: for a member whose process was SIGKILLed and so never said goodbye. kafkajs's admin has
 * no call for it. Sent straight to `broker`, which must be the group's coordinator (true of a
 * single broker). Resolves with the error code per member (0: removed; 25: UNKNOWN_MEMBER_ID,
 * it was gone already).
 */
export async function leaveGroup(broker: string, groupId: string, memberIds: string[], timeoutMs = 5000): Promise<number[]> {
  if (memberIds.length === 0) return [];
  const conn = await RawConnection.open(broker, timeoutMs);
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    // ApiVersions v0: which LeaveGroup versions the broker serves.
    const av = await conn.request(ApiKey.ApiVersions, 0, Buffer.alloc(0));
    const avError = av.int16();
    if (avError !== 0) throw new Error(`ApiVersions failed with error ${avError}`);
    const ranges = av.array(() => ({ key: av.int16(), min: av.int16(), max: av.int16() }));
    const range = ranges.find((x) => x.key === ApiKey.LeaveGroup);
    if (!range) throw new Error("the broker serves no LeaveGroup");
    if (range.min <= 3 && range.max >= 3) {
      // v3 (KIP-345): several members in one request.
      const members = Buffer.concat(memberIds.map((m) => Buffer.concat([encString(m), encString(null)])));
      const r = await conn.request(ApiKey.LeaveGroup, 3, Buffer.concat([encString(groupId), encInt32(memberIds.length), members]));
      r.int32(); // throttle
      const top = r.int16();
      const per = r.array(() => {
        const id = r.string();
        r.string();
        return { id, code: r.int16() };
      });
      return memberIds.map((m) => per.find((p) => p.id === m)?.code ?? top);
    }
    if (range.min > 2) throw new Error(`the broker serves LeaveGroup v${range.min}-v${range.max} only`);
    const version = Math.min(range.max, 2);
    const codes: number[] = [];
    for (const m of memberIds) {
      const r = await conn.request(ApiKey.LeaveGroup, version, Buffer.concat([encString(groupId), encString(m)]));
      if (version >= 1) r.int32(); // throttle
      codes.push(r.int16());
    }
    return codes;
  } finally {
    clearTimeout(timer);
    conn.close();
  }
}
