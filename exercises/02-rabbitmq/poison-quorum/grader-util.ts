/**
 * The poison-quorum grader's world: the learner's host with a channel through the grader's
 * proxy (every delivery and every ack, nack and reject is read off that wire), the grader's own
 * connection to the broker (its publishes, the queue counts, the re-declaration probes that the
 * broker accepts only when the arguments match), the handler the learner's consumer calls, and
 * the judges that read all of it.
 */
import { connect as tcpConnect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import type { Channel, ChannelModel, ConfirmChannel, GetMessage } from "amqplib";
import { LabError, QueueObserver, WireDeliveries, amqpCode, brokerText, decodeMethod, describeValue } from "../../../src/kit/index.ts";
import type { ChaosProxy, CheckContext, Delivery, Host, Rng, Settlement } from "../../../src/kit/index.ts";
import type { Job, JobConsumer, PoisonQueueSpec, PoisonQuorumSubmission } from "../../../src/contracts/poison-quorum.ts";

export type T = CheckContext<PoisonQuorumSubmission>;

/** How long a learner call may take before the check says so (generous: a loaded box). */
export const CALL_MS = 5000;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- versions

/** major.minor of a RabbitMQ version string ("4.1.0-rc.1" → [4, 1]), or null. */
export function majorMinor(version: string): [number, number] | null {
  const m = /^(\d+)\.(\d+)/.exec(version);
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/** The contract's rule, computed here independently of the learner's code. */
export function atLeastOnceFrom(version: string): boolean {
  const mm = majorMinor(version);
  if (!mm) return false;
  return mm[0] > 3 || (mm[0] === 3 && mm[1] >= 10);
}

/**
 * RabbitMQ 4.3 counts toward the delivery limit only returns that say the delivery failed
 * (basic.reject). Whether the return of a delivery that a dying connection left unsettled
 * counts there too is not something the grader relies on: from 4.3 on it allows that one
 * delivery once more. Before 4.3 every return counts (measured on 3.10).
 */
export function killedDeliveryMayBeFree(version: string): boolean {
  const mm = majorMinor(version);
  return mm !== null && (mm[0] > 4 || (mm[0] === 4 && mm[1] >= 3));
}

export function serverVersion(conn: ChannelModel): string {
  return String(conn.connection.serverProperties.version ?? "");
}

/** The main queue's arguments the contract asks for, on a broker of this version. */
export function expectedArgs(spec: PoisonQueueSpec, version: string): Record<string, unknown> {
  const args: Record<string, unknown> = {
    "x-queue-type": "quorum",
    "x-delivery-limit": spec.deliveryLimit,
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": spec.deadLetterQueue,
  };
  if (atLeastOnceFrom(version)) Object.assign(args, { "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish" });
  return args;
}

// ---------------------------------------------------------------- the world

export interface World {
  host: Host;
  /** The learner's channel: built in the host, on a connection through `proxy`. */
  ch: Channel;
  proxy: ChaosProxy;
  wire: WireDeliveries;
  /** The grader's own view of the broker, on its own connection. */
  gconn: ChannelModel;
  gch: ConfirmChannel;
  obs: QueueObserver;
  spec: PoisonQueueSpec;
  /** The broker's version, from the grader's own connection. */
  version: string;
}

/**
 * A queue name unique to this check. In the grading's own vhost (the usual case) the vhost's
 * deletion removes every queue, so the name is not registered for per-check cleanup.
 */
export function queueName(t: T, base: string): string {
  const vhost = decodeURIComponent(new URL(t.amqpUrl).pathname.slice(1));
  return vhost.startsWith("msglab-") ? `${t.names.prefix}.${base}` : t.names.queue(base);
}

export function makeSpec(t: T, limit: number): PoisonQueueSpec {
  return { queue: queueName(t, "jobs"), deadLetterQueue: queueName(t, "jobs.dead"), deliveryLimit: limit };
}

/** The grader's side of a check (connection, observer, confirm channel) and the learner's (host, proxy, channel). */
export async function arrange(t: T, limit: number, opts: { host?: Host } = {}): Promise<World> {
  const spec = makeSpec(t, limit);
  const learnerSide = Promise.all([t.proxy(), opts.host ? Promise.resolve(opts.host) : t.learnerHost()]).then(async ([proxy, host]) => {
    const wire = new WireDeliveries(proxy);
    const ch = await host.cap<Channel>("amqp.channel", { url: proxy.urlFor(t.amqpUrl) });
    return { proxy, host, wire, ch };
  });
  const graderSide = t.rabbit.connect().then(async (gconn) => {
    const gch = await gconn.createConfirmChannel();
    gch.on("error", () => {});
    return { gconn, gch, obs: new QueueObserver(gconn), version: serverVersion(gconn) };
  });
  const [l, g] = await Promise.all([learnerSide, graderSide]);
  return { ...l, ...g, spec };
}

/** Another process of the same service: a host of its own with a channel through the same proxy. */
export async function anotherProcess(t: T, w: World): Promise<{ host: Host; ch: Channel }> {
  const host = await t.host();
  const ch = await host.cap<Channel>("amqp.channel", { url: w.proxy.urlFor(t.amqpUrl) });
  return { host, ch };
}

function isCheckFailure(e: unknown): boolean {
  return (e as Error)?.name === "CheckFailure";
}

/** The learner's declarePoisonQueue on `ch` in `host`, its throw turned into a message. */
export async function callDeclare(t: T, host: Host, ch: Channel, spec: PoisonQueueSpec, what = "declarePoisonQueue()"): Promise<void> {
  try {
    await t.within(what, CALL_MS, host.call("declarePoisonQueue", ch, spec));
  } catch (e) {
    if (isCheckFailure(e)) throw e;
    if ((e as Error)?.name === "HostGone") throw e;
    const said = brokerText(e);
    if (/invalid arg '[^']+'.*rabbit_classic_queue/.test(said)) {
      t.fail(`${what} threw: ${said}. A classic queue has no delivery count and refuses the quorum-queue arguments: declare the work queue with x-queue-type "quorum".`);
    }
    t.fail(`${what} threw: ${said}.`);
  }
}

export async function startConsumer(t: T, host: Host, ch: Channel, queue: string, handler: Handler): Promise<JobConsumer> {
  let consumer: JobConsumer;
  try {
    consumer = await t.within("consumeJobs()", CALL_MS, host.call<JobConsumer>("consumeJobs", ch, queue, handler.fn));
  } catch (e) {
    if (isCheckFailure(e)) throw e;
    if ((e as Error)?.name === "HostGone") throw e;
    t.fail(`consumeJobs() threw: ${brokerText(e)}.`);
  }
  if (!consumer || typeof consumer.stop !== "function") {
    t.fail(`consumeJobs() resolved to ${describeValue(consumer)}; it must resolve to an object with a stop() method.`);
  }
  return consumer;
}

/**
 * The learner's host serves the whole grading, so a check that passed leaves no consumer
 * running in it: stop() once the verdict is in (housekeeping; stop() has a check of its own).
 * If stop() does not resolve, the host is killed and the next check gets a fresh one.
 */
export async function leaveClean(t: T, w: World, consumer: JobConsumer): Promise<void> {
  const stopped = await t.within("stop()", 2000, consumer.stop()).then(
    () => true,
    () => false,
  );
  if (!stopped) await w.host.kill();
}

// ---------------------------------------------------------------- probing the broker

export type Probe = { ok: true } | { ok: false; missing: true } | { ok: false; exclusive: string } | { ok: false; arg: string | null; said: string };

/**
 * From the grader's own connection: a passive declare (does the queue exist?), then a
 * re-declaration with exactly `args`. The broker accepts it only when every argument it knows
 * for the queue type is equal, type and value (one it lacks, or has that the probe lacks, is a
 * 406 that names it). Passive first: a re-declaration of a missing queue would create it.
 */
export async function probeQueue(obs: QueueObserver, queue: string, args: Record<string, unknown>): Promise<Probe> {
  const passive = await obs.throwaway();
  try {
    await passive.checkQueue(queue);
    await passive.close().catch(() => {});
  } catch (e) {
    if (amqpCode(e) === 404) return { ok: false, missing: true };
    if (amqpCode(e) === 405) return { ok: false, exclusive: brokerText(e) };
    throw e;
  }
  const probe = await obs.throwaway();
  try {
    await probe.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false, arguments: args });
    await probe.close().catch(() => {});
    return { ok: true };
  } catch (e) {
    if (amqpCode(e) !== 406) throw e;
    const said = brokerText(e);
    return { ok: false, arg: /inequivalent arg '([^']+)'/.exec(said)?.[1] ?? null, said };
  }
}

/** The dead-letter queue: durable, quorum or classic, no other arguments. Null when it is so, else what is wrong. */
export async function judgeDeadLetterQueue(obs: QueueObserver, spec: PoisonQueueSpec): Promise<string | null> {
  const shapes: Record<string, unknown>[] = [{ "x-queue-type": "quorum" }, {}, { "x-queue-type": "classic" }];
  let last: Probe | null = null;
  for (const args of shapes) {
    const p = await probeQueue(obs, spec.deadLetterQueue, args);
    if (p.ok) return null;
    if ("missing" in p) {
      return `There is no queue "${spec.deadLetterQueue}" on the broker. The work queue dead-letters through the default exchange with routing key "${spec.deadLetterQueue}": without that queue, a poison message is dropped the moment its limit is spent. Declare the dead-letter queue (durable) before the work queue.`;
    }
    if ("exclusive" in p) return `The dead-letter queue is exclusive (the broker says: ${p.exclusive}): it would vanish with the connection that declared it, and the poison messages with it.`;
    last = p;
    if (p.arg !== "x-queue-type") break;
  }
  const said = last && "said" in last ? last.said : "";
  if (/'durable'/.test(said)) return `The dead-letter queue is not durable (the broker says: ${said}): a broker restart would lose every poison message in it.`;
  if (/'auto_delete'/.test(said)) return `The dead-letter queue is auto-delete (the broker says: ${said}): it would vanish when its last consumer leaves, with the poison messages in it.`;
  return `The dead-letter queue "${spec.deadLetterQueue}" is not declared as asked (the broker says: ${said}). Declare it durable, quorum or classic, with no other arguments.`;
}

/**
 * The queue's type as the management API reports it, where it answers (`msglab up` enables it),
 * else null. Only for the wording of a failure: the verdict is the broker's 406 to the probe,
 * which names the first argument it compares that differs (for a classic queue that is often
 * not x-queue-type).
 */
export async function queueTypeOf(amqpUrl: string, queue: string): Promise<string | null> {
  try {
    const u = new URL(amqpUrl);
    const base = (process.env.MSGLAB_RABBIT_MANAGEMENT_URL ?? `http://${u.hostname || "127.0.0.1"}:15672`).replace(/\/$/, "");
    const vhost = decodeURIComponent(u.pathname.slice(1)) || "/";
    const auth = "Basic " + Buffer.from(`${decodeURIComponent(u.username || "guest")}:${decodeURIComponent(u.password || "guest")}`).toString("base64");
    const res = await fetch(`${base}/api/queues/${encodeURIComponent(vhost)}/${encodeURIComponent(queue)}`, { headers: { authorization: auth }, signal: AbortSignal.timeout(1000) });
    if (!res.ok) return null;
    const body = (await res.json()) as { type?: unknown };
    return typeof body.type === "string" ? body.type : null;
  } catch {
    return null;
  }
}

/**
 * The work queue against the contract's arguments for `version`. Null when they match, else
 * what is wrong, in words, from the broker's own 406.
 */
export async function judgeWorkQueue(obs: QueueObserver, spec: PoisonQueueSpec, version: string, where = "", amqpUrl?: string): Promise<string | null> {
  const args = expectedArgs(spec, version);
  const p = await probeQueue(obs, spec.queue, args);
  if (p.ok) return null;
  const on = where ? ` ${where}` : "";
  if ("said" in p && p.arg !== "x-queue-type" && amqpUrl) {
    const type = await queueTypeOf(amqpUrl, spec.queue);
    if (type && type !== "quorum") p.arg = "x-queue-type";
  }
  if ("missing" in p) return `After declarePoisonQueue() resolved${on}, the broker has no queue "${spec.queue}".`;
  if ("exclusive" in p) return `The work queue is exclusive${on} (the broker says: ${p.exclusive}): it belongs to one connection and vanishes with it.`;
  const said = p.said;
  switch (p.arg) {
    case "x-queue-type":
      return `The work queue${on} is not a quorum queue (the broker says: ${said}; its type is not quorum). Only quorum queues count the deliveries of each message; a classic queue ignores x-delivery-limit and hands a poison message back forever.`;
    case "x-delivery-limit":
      if (/current is none/.test(said)) {
        return `The work queue${on} has no x-delivery-limit (the broker says: ${said}). Without one, RabbitMQ 3.x requeues a poison message forever, and 4.x applies its default of 20, not your ${spec.deliveryLimit}: set it explicitly.`;
      }
      return `The work queue's x-delivery-limit${on} is not ${spec.deliveryLimit}, a number (the broker says: ${said}). Pass spec.deliveryLimit as is.`;
    case "x-dead-letter-exchange":
      return `The work queue's dead-letter exchange${on} is not the default exchange "" (the broker says: ${said}). A dead-letter exchange with no queue bound to it drops every poison message it is given; with "" and x-dead-letter-routing-key set to the dead-letter queue's name, they land there.`;
    case "x-dead-letter-routing-key":
      return `The work queue's x-dead-letter-routing-key${on} is not "${spec.deadLetterQueue}" (the broker says: ${said}): dead-lettered messages must land in the dead-letter queue.`;
    case "x-dead-letter-strategy":
      return atLeastOnceFrom(version)
        ? `The work queue${on} does not dead-letter at least once (the broker says: ${said}). On RabbitMQ ${version} (3.10 or newer) set x-dead-letter-strategy "at-least-once": with the default (at-most-once) a poison message is gone if the dead-letter queue cannot take it at that moment.`
        : `The broker says it is RabbitMQ ${version}, which has no at-least-once dead-lettering (it came in 3.10), yet the work queue${on} sets x-dead-letter-strategy (the broker says: ${said}). Read the version from ch.connection.serverProperties.version and compare major.minor as numbers.`;
    case "x-overflow":
      return atLeastOnceFrom(version)
        ? `The work queue's x-overflow${on} is not "reject-publish" (the broker says: ${said}). At-least-once dead-lettering needs reject-publish; with drop-head (the default) the broker silently falls back to at-most-once.`
        : `The broker says it is RabbitMQ ${version} (before 3.10: no at-least-once dead-lettering), so the work queue${on} sets no x-overflow (the broker says: ${said}).`;
    case "durable":
      return `The work queue${on} is not durable (the broker says: ${said}).`;
    case "auto_delete":
      return `The work queue${on} is auto-delete (the broker says: ${said}): it would vanish, with its backlog, when the last consumer leaves.`;
    default:
      return `The work queue${on} carries an argument the contract does not ask for, or lacks one (the broker says: ${said}). Declare it with exactly: ${describeValue(args, 400)}.`;
  }
}

// ---------------------------------------------------------------- jobs

const KINDS = ["resize-image", "send-invoice", "sync:crm", "charge card"];
const TEXTS = ["Zürich Ärztehaus 🚑", 'O\'Brien "Bulk" Ltd', "初音 trading", "back\\slash & co", "plain"];
const SEPARATORS = [":", " ", '"', "'", "-"];

/** A job with an id that carries quotes, colons or spaces, and text outside ASCII. */
export function makeJob(rng: Rng, role: "good" | "poison" | "flaky", n: number): Job {
  const tag = Math.floor(rng.next() * 0xffffff).toString(16).padStart(6, "0");
  const sep = rng.pick(SEPARATORS);
  return { id: `${role}${sep}${n}${sep}${tag}`, kind: rng.pick(KINDS), data: { customer: rng.pick(TEXTS), amount: rng.int(1, 99999) / 100, lines: rng.int(1, 5) } };
}

/** Publishes on the grader's own confirm channel (persistent, messageId = job id) and waits for every confirm. */
export async function graderPublish(gch: ConfirmChannel, queue: string, jobs: Job[]): Promise<void> {
  for (const job of jobs) gch.sendToQueue(queue, Buffer.from(JSON.stringify(job), "utf8"), { persistent: true, messageId: job.id, contentType: "application/json" });
  await gch.waitForConfirms();
}

/** Every ready message of `queue`, read with the grader's own basic.get (auto-ack), in queue order. */
export async function drainAll(obs: QueueObserver, queue: string): Promise<GetMessage[]> {
  const ch = await obs.throwaway();
  const out: GetMessage[] = [];
  for (;;) {
    const m = await ch.get(queue, { noAck: true });
    if (m === false) break;
    out.push(m);
  }
  await ch.close().catch(() => {});
  return out;
}

export function idOfBody(body: Buffer): string | null {
  try {
    const v = JSON.parse(body.toString("utf8")) as { id?: unknown } | null;
    return v && typeof v === "object" && typeof v.id === "string" ? v.id : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- the handler

/** "slow": succeeds, after the Handler's `slowMs` instead of a millisecond or two. */
export type Act = "ok" | "slow" | "fail" | "hold" | "kill";

export interface Call {
  n: number;
  job: unknown;
  id: string;
  /** The how-manieth call for this id (over every process of the check). */
  nth: number;
  /** The delivery on the wire that carried it (null: none did). */
  delivery: Delivery | null;
  state: "running" | "done" | "failed" | "held";
  /** Which process called it: 1 for the first host of the check, 2 for its restart. */
  process: number;
}

/**
 * The JobHandler the learner's consumer gets: a callback into the grader. Every call is matched
 * to the delivery on the wire that carried its job, and recorded with how it ended, so each
 * ack and reject can be judged against what the handler had done when it crossed the proxy.
 */
export class Handler {
  readonly calls: Call[] = [];
  private readonly callOf = new Map<Delivery, Call>();
  readonly fn: (job: Job) => Promise<void>;
  /** Which process the next calls come from. */
  process = 1;
  private waiters = new Set<() => void>();

  constructor(
    private readonly wire: WireDeliveries,
    decide: (call: Call) => Act,
    opts: { rng: Rng; onKill?: (call: Call) => unknown; slowMs?: number },
  ) {
    this.fn = (job: Job) => {
      const id = String((job as { id?: unknown } | null)?.id);
      const delivery = this.match(id);
      const call: Call = { n: this.calls.length + 1, job, id, nth: this.calls.filter((c) => c.id === id).length + 1, delivery, state: "running", process: this.process };
      this.calls.push(call);
      if (delivery) this.callOf.set(delivery, call);
      const act = decide(call);
      if (act === "hold" || act === "kill") {
        call.state = "held";
        if (act === "kill") void opts.onKill?.(call);
        this.poke();
        return new Promise<void>(() => {});
      }
      this.poke();
      return new Promise<void>((resolve, reject) => {
        setTimeout(() => {
          if (act === "ok" || act === "slow") {
            call.state = "done";
            this.poke();
            resolve();
          } else {
            call.state = "failed";
            this.poke();
            reject(new Error(`grader: job ${id} failed (call ${call.nth} for it)`));
          }
        }, act === "slow" ? (opts.slowMs ?? 0) : opts.rng.int(0, 2));
      });
    };
    // Taps run before the proxy decides what to do with a frame (hold it, say): look again a turn later too.
    wire.onFrame(() => {
      this.poke();
      setImmediate(() => this.poke());
    });
  }

  /** The latest delivery of this job on the wire that no call has claimed yet. */
  private match(id: string): Delivery | null {
    const ds = this.wire.deliveries;
    for (let i = ds.length - 1; i >= 0; i--) {
      const d = ds[i]!;
      if (!this.callOf.has(d) && d.messageId === id) return d;
    }
    return null;
  }

  call(d: Delivery): Call | undefined {
    return this.callOf.get(d);
  }

  of(id: string): Call[] {
    return this.calls.filter((c) => c.id === id);
  }

  done(id: string): number {
    return this.calls.filter((c) => c.id === id && c.state === "done").length;
  }

  poke(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolves once `cond` holds (checked on every frame and every handler event), or rejects after `ms`. */
  until(cond: () => boolean, ms: number): Promise<boolean> {
    if (cond()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w = () => {
        if (!cond()) return;
        this.waiters.delete(w);
        clearTimeout(timer);
        clearInterval(poll);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        clearInterval(poll);
        resolve(false);
      }, ms);
      // Frames and handler calls poke; a promise of the learner's settling, or a host's exit, don't.
      const poll = setInterval(w, 5);
      this.waiters.add(w);
    });
  }
}

// ---------------------------------------------------------------- judging the wire

export function describeSettlement(s: Settlement): string {
  if (s.how === "recover") return "basic.recover";
  if (s.how === "closed") return "a channel close";
  if (s.how === "auto") return "no-ack delivery";
  const flags = [s.multiple ? "multiple" : "", s.how !== "ack" ? `requeue ${s.requeue}` : ""].filter(Boolean).join(", ");
  return `basic.${s.how} (delivery-tag ${s.tag}${flags ? `, ${flags}` : ""})`;
}

function whatJob(d: Delivery): string {
  return `job ${describeValue(d.messageId ?? "(no message id)")} (delivery-tag ${d.tag})`;
}

/**
 * Judges one settlement against the handler's record as it crossed the proxy (listeners run in
 * the proxy's tap, before the frame goes on). Null when it is right.
 */
export function judgeSettlement(settled: Delivery[], s: Settlement, handler: Handler): string | null {
  if (s.how === "closed") return null; // a kill, or stop() closing the channel: the broker returns them
  if (s.how === "auto") {
    return `Your consumer subscribed with noAck: true: the broker forgets each job the moment it sends it, so a failed job can never go back to be counted, and a crash loses the jobs in flight.`;
  }
  if (s.how === "recover") return `Your consumer sent basic.recover, which hands back every unacked delivery of the channel at once, finished or not.`;
  const what = `${describeSettlement(s)}${settled.length > 1 ? `, which settled ${settled.length} deliveries,` : ""}`;
  for (const d of settled) {
    const call = handler.call(d);
    if (s.how === "ack") {
      if (!call) return `Your consumer sent ${what} for ${whatJob(d)} before the handler was called with it: acked before it was handled, it is lost if the service dies now.`;
      if (call.state === "running" || call.state === "held") return `Your consumer sent ${what} while the handler was still working on ${whatJob(d)}.`;
      if (call.state === "failed") {
        return `Your consumer sent ${what} for ${whatJob(d)}, whose handler call (call ${call.nth} for it) rejected. Acked, a failed job is gone (and a copy republished by hand starts the broker's count from zero, so a poison job never leaves): ack only after the handler resolves, and give a failure back with ch.reject(msg, true).`;
      }
      continue;
    }
    // nack or reject
    if (!call || call.state === "running" || call.state === "held") return `Your consumer sent ${what} for ${whatJob(d)} while the handler had not finished with it.`;
    if (call.state === "done") return `Your consumer sent ${what} for ${whatJob(d)} although the handler finished it: it is handled again, or dead-lettered, after it succeeded.`;
    if (!s.requeue) {
      if (call.nth === 1) {
        return `The handler failed ${whatJob(d)} once (its first call) and your consumer sent ${what}: without requeue the job is dead-lettered on its first failure, though it might succeed next time. Give it back with requeue and let the broker's delivery limit decide when it is poison.`;
      }
      return `The handler failed ${whatJob(d)} on its call ${call.nth} and your consumer sent ${what}: it gave up on the job itself. Counting failures is the broker's job (x-delivery-limit on the quorum queue): a count kept in your process starts from zero after every restart. Give every failure back with ch.reject(msg, true).`;
    }
    if (s.how === "nack") {
      return `The handler failed ${whatJob(d)} and your consumer gave it back with ${what}. On RabbitMQ 3.x and 4.0-4.2 that counts toward x-delivery-limit, but from 4.3 on a basic.nack with requeue does not (it means "not now", not "failed"): a poison job would come back forever. Use ch.reject(msg, true), which counts as a failed delivery on every version.`;
    }
    if (s.multiple) return `Your consumer sent ${what}: settle each delivery on its own.`;
  }
  if (s.how === "ack" && s.multiple && settled.length > 1) return null;
  return null;
}

/** Collects the first wrong settlement on the wire (and any settlement of a tag that was not outstanding). */
export class WireJudge {
  problem: string | null = null;
  constructor(wire: WireDeliveries, handler: Handler) {
    wire.onSettle((settled, s) => {
      if (this.problem) return;
      this.problem = judgeSettlement(settled, s, handler);
      if (this.problem) handler.poke();
    });
    wire.onFrame((f, m, from) => {
      if (this.problem || from !== "broker" || m?.name !== "channel.close") return;
      const code = m.replyCode;
      if (code === 406 && /unknown delivery tag/i.test(m.replyText)) {
        this.problem = `The broker closed your channel: ${m.replyText}. A delivery was settled twice (or acked after noAck): settle each delivery exactly once.`;
        handler.poke();
      }
    });
  }
}

/** How many times the wire carried a delivery of this job, over every process of the check. */
export function deliveriesOf(wire: WireDeliveries, id: string): Delivery[] {
  return wire.deliveries.filter((d) => d.messageId === id);
}

// ---------------------------------------------------------------- a broker that says another version

/**
 * A TCP proxy in front of RabbitMQ that rewrites one thing: the `version` in the server
 * properties of the broker's connection.start, so the learner's code reads the version the
 * check chose while it talks to the real broker. Every other byte passes as it is.
 */
export class VersionProxy {
  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly sockets: Set<Socket>,
  ) {}

  static async start(target: { host: string; port: number }, version: string): Promise<VersionProxy> {
    const sockets = new Set<Socket>();
    const server = createServer((client) => {
      const broker = tcpConnect(target);
      client.setNoDelay(true);
      broker.setNoDelay(true);
      sockets.add(client).add(broker);
      let buf = Buffer.alloc(0);
      let rewritten = false;
      broker.on("data", (chunk: Buffer) => {
        if (rewritten) return void client.write(chunk);
        buf = Buffer.concat([buf, chunk]);
        if (buf.length < 7) return;
        const size = buf.readUInt32BE(3);
        if (buf.length < 8 + size) return;
        const frame = buf.subarray(0, 8 + size);
        rewritten = true;
        client.write(Buffer.concat([rewriteStart(frame, version), buf.subarray(8 + size)]));
      });
      client.on("data", (chunk: Buffer) => broker.write(chunk));
      const end = () => {
        client.destroy();
        broker.destroy();
        sockets.delete(client);
        sockets.delete(broker);
      };
      client.on("error", end).on("close", end);
      broker.on("error", end).on("close", end);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    return new VersionProxy(server, (server.address() as AddressInfo).port, sockets);
  }

  urlFor(amqpUrl: string): string {
    const u = new URL(amqpUrl);
    u.hostname = "127.0.0.1";
    u.port = String(this.port);
    return u.toString();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** connection.start with `version` in its server-properties table replaced. */
function rewriteStart(frame: Buffer, version: string): Buffer {
  // type(1) channel(2) size(4) | class(2) method(2) major(1) minor(1) table(4 + n) mechanisms locales | 0xCE
  if (frame[0] !== 1 || frame.readUInt16BE(7) !== 10 || frame.readUInt16BE(9) !== 10) throw new LabError("VersionProxy: the broker's first frame is not connection.start");
  const tableAt = 13;
  const tableLen = frame.readUInt32BE(tableAt);
  const table = frame.subarray(tableAt + 4, tableAt + 4 + tableLen);
  const rest = frame.subarray(tableAt + 4 + tableLen, frame.length - 1);
  const parts: Buffer[] = [];
  let off = 0;
  let replaced = false;
  while (off < table.length) {
    const keyLen = table[off]!;
    const key = table.toString("utf8", off + 1, off + 1 + keyLen);
    const valueAt = off + 1 + keyLen;
    const end = valueAt + 1 + valueLength(table, valueAt);
    if (key === "version") {
      const v = Buffer.from(version, "utf8");
      const len = Buffer.alloc(4);
      len.writeUInt32BE(v.length);
      parts.push(table.subarray(off, valueAt), Buffer.from("S"), len, v);
      replaced = true;
    } else parts.push(table.subarray(off, end));
    off = end;
  }
  if (!replaced) throw new LabError("VersionProxy: the broker's server properties have no version");
  const newTable = Buffer.concat(parts);
  const tl = Buffer.alloc(4);
  tl.writeUInt32BE(newTable.length);
  const payload = Buffer.concat([frame.subarray(7, tableAt), tl, newTable, rest]);
  const head = Buffer.alloc(7);
  head.writeUInt8(1, 0);
  head.writeUInt16BE(0, 1);
  head.writeUInt32BE(payload.length, 3);
  return Buffer.concat([head, payload, Buffer.from([0xce])]);
}

/** The length of a field value after its type byte at `at`. */
function valueLength(b: Buffer, at: number): number {
  const type = String.fromCharCode(b[at]!);
  const v = at + 1;
  switch (type) {
    case "S":
    case "F":
    case "A":
    case "x":
      return 4 + b.readUInt32BE(v);
    case "t":
    case "b":
    case "B":
      return 1;
    case "s":
    case "u":
      return 2;
    case "I":
    case "i":
    case "f":
      return 4;
    case "l":
    case "d":
    case "T":
      return 8;
    case "D":
      return 5;
    case "V":
      return 0;
    default:
      throw new LabError(`VersionProxy: unknown field type ${JSON.stringify(type)} in the server properties`);
  }
}

export { decodeMethod };
