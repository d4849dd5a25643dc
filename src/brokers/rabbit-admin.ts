/**
 * A RabbitMQ vhost per grading: everything a submission declares (queues it names itself, too)
 * goes when the vhost is deleted at the end. Through the management HTTP API where it answers
 * (`msglab up` enables the plugin on brokers it manages), else `rabbitmqctl` on a local broker,
 * else no vhost at all: then names are only prefixed, and the result says so.
 */
import { spawnSync } from "node:child_process";
import { amqpHostPort } from "../config.ts";

export type VhostMethod = "management" | "rabbitmqctl" | "none";

interface Api {
  base: string;
  auth: string;
}

function apiFor(amqpUrl: string, env: NodeJS.ProcessEnv = process.env): Api {
  const u = new URL(amqpUrl);
  const user = decodeURIComponent(u.username || "guest");
  const pass = decodeURIComponent(u.password || "guest");
  const base = (env.MSGLAB_RABBIT_MANAGEMENT_URL ?? `http://${u.hostname || "127.0.0.1"}:15672`).replace(/\/$/, "");
  return { base, auth: "Basic " + Buffer.from(`${user}:${pass}`).toString("base64") };
}

function userOf(amqpUrl: string): string {
  return decodeURIComponent(new URL(amqpUrl).username || "guest");
}

async function http(api: Api, method: string, path: string, body?: unknown, timeoutMs = 3000): Promise<number> {
  const res = await fetch(api.base + path, {
    method,
    headers: { authorization: api.auth, "content-type": "application/json" },
    body: body === undefined ? null : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  await res.arrayBuffer().catch(() => undefined);
  return res.status;
}

/** The same URL with another vhost. */
export function withVhost(amqpUrl: string, vhost: string): string {
  const u = new URL(amqpUrl);
  u.pathname = "/" + encodeURIComponent(vhost);
  return u.toString();
}

function isLocal(amqpUrl: string): boolean {
  const { host } = amqpHostPort(amqpUrl);
  return host === "127.0.0.1" || host === "localhost" || host === "::1";
}

function ctl(args: string[]): boolean {
  const r = spawnSync("rabbitmqctl", ["-q", ...args], { stdio: "ignore", timeout: 15_000 });
  return r.status === 0;
}

/** Whether the management API answers with these credentials (doctor uses this too). */
export async function managementAvailable(amqpUrl: string): Promise<boolean> {
  try {
    return (await http(apiFor(amqpUrl), "GET", "/api/whoami", undefined, 1500)) === 200;
  } catch {
    return false;
  }
}

export class GradingVhost {
  private constructor(
    readonly url: string,
    /** Null when no vhost could be made. */
    readonly name: string | null,
    readonly method: VhostMethod,
    readonly warning: string | null,
    private readonly amqpUrl: string,
  ) {}

  static async create(amqpUrl: string, name: string): Promise<GradingVhost> {
    const api = apiFor(amqpUrl);
    const path = `/api/vhosts/${encodeURIComponent(name)}`;
    try {
      const made = await http(api, "PUT", path, {});
      if (made === 201 || made === 204) {
        const perm = await http(api, "PUT", `/api/permissions/${encodeURIComponent(name)}/${encodeURIComponent(userOf(amqpUrl))}`, { configure: ".*", write: ".*", read: ".*" });
        if (perm === 201 || perm === 204) return new GradingVhost(withVhost(amqpUrl, name), name, "management", null, amqpUrl);
        await http(api, "DELETE", path).catch(() => 0);
      }
    } catch {
      // No management API here; try the next way.
    }
    if (isLocal(amqpUrl) && ctl(["add_vhost", name])) {
      if (ctl(["set_permissions", "-p", name, userOf(amqpUrl), ".*", ".*", ".*"])) return new GradingVhost(withVhost(amqpUrl, name), name, "rabbitmqctl", null, amqpUrl);
      ctl(["delete_vhost", name]);
    }
    return new GradingVhost(
      amqpUrl,
      null,
      "none",
      "No vhost of its own for this grading (the management API did not answer and rabbitmqctl is not available): names were prefixed, but anything your code declared under a name of its own may remain on the broker. Enable the management plugin: `rabbitmq-plugins enable rabbitmq_management`.",
      amqpUrl,
    );
  }

  async delete(): Promise<void> {
    if (!this.name) return;
    await deleteVhost(this.amqpUrl, this.name, this.method);
  }
}

/** Deletes a grading's vhost, and with it every queue, exchange and connection in it. */
export async function deleteVhost(amqpUrl: string, name: string, method: VhostMethod | "any" = "any"): Promise<boolean> {
  if (method === "management" || method === "any") {
    try {
      const s = await http(apiFor(amqpUrl), "DELETE", `/api/vhosts/${encodeURIComponent(name)}`, undefined, 5000);
      if (s === 204 || s === 404) return true;
    } catch {
      // fall through
    }
  }
  if ((method === "rabbitmqctl" || method === "any") && isLocal(amqpUrl)) return ctl(["delete_vhost", name]);
  return false;
}

/** Vhosts left by gradings that died before deleting theirs (a SIGKILLed CLI and child). */
export async function listGradingVhosts(amqpUrl: string): Promise<string[]> {
  try {
    const res = await fetch(apiFor(amqpUrl).base + "/api/vhosts?columns=name", { headers: { authorization: apiFor(amqpUrl).auth }, signal: AbortSignal.timeout(3000) });
    if (res.status !== 200) return [];
    const rows = (await res.json()) as { name: string }[];
    return rows.map((r) => r.name).filter((n) => /^msglab-[0-9a-f]{8}$/.test(n));
  } catch {
    return [];
  }
}

interface Named {
  vhost: string;
  name: string;
}

async function listNamed(amqpUrl: string, what: "queues" | "exchanges"): Promise<Named[] | null> {
  try {
    const api = apiFor(amqpUrl);
    const res = await fetch(`${api.base}/api/${what}?columns=vhost,name`, { headers: { authorization: api.auth }, signal: AbortSignal.timeout(3000) });
    if (res.status !== 200) return null;
    return ((await res.json()) as Named[]).filter((x) => x.name !== "" && !x.name.startsWith("amq."));
  } catch {
    return null;
  }
}

/**
 * With Node's permission model alone a host has network, so a submission can reach vhosts
 * other than its grading's (the default one, with guest/guest). What appears there during the
 * grading is removed on a local broker and reported; on a shared one it is only reported.
 * Under bubblewrap there is no such route (see src/kit/gateway.ts) and this is not used.
 */
export class RabbitLeftovers {
  readonly warnings: string[] = [];
  private constructor(
    private readonly amqpUrl: string,
    private readonly before: Set<string>,
  ) {}

  static async snapshot(amqpUrl: string): Promise<RabbitLeftovers | null> {
    const [q, x] = await Promise.all([listNamed(amqpUrl, "queues"), listNamed(amqpUrl, "exchanges")]);
    if (!q || !x) return null;
    return new RabbitLeftovers(amqpUrl, new Set([...q.map((r) => `q\0${r.vhost}\0${r.name}`), ...x.map((r) => `x\0${r.vhost}\0${r.name}`)]));
  }

  async sweep(): Promise<void> {
    const [q, x] = await Promise.all([listNamed(this.amqpUrl, "queues"), listNamed(this.amqpUrl, "exchanges")]);
    const outside = (r: Named) => !/^msglab-[0-9a-f]{8}$/.test(r.vhost);
    const fresh = [
      ...(q ?? []).filter((r) => outside(r) && !this.before.has(`q\0${r.vhost}\0${r.name}`)).map((r) => ({ ...r, kind: "queues" as const })),
      ...(x ?? []).filter((r) => outside(r) && !this.before.has(`x\0${r.vhost}\0${r.name}`)).map((r) => ({ ...r, kind: "exchanges" as const })),
    ];
    if (fresh.length === 0) return;
    const names = fresh.map((r) => `${r.kind === "queues" ? "queue" : "exchange"} "${r.name}" in vhost "${r.vhost}"`).join(", ");
    if (!isLocal(this.amqpUrl)) {
      this.warnings.push(`Your code declared ${names}, outside this grading's vhost, on a shared broker; it was left there.`);
      return;
    }
    const api = apiFor(this.amqpUrl);
    await Promise.all(fresh.map((r) => http(api, "DELETE", `/api/${r.kind}/${encodeURIComponent(r.vhost)}/${encodeURIComponent(r.name)}`).catch(() => 0)));
    this.warnings.push(`Your code declared ${names}, outside this grading's vhost (the sandbox had no OS layer); removed.`);
  }
}
