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
