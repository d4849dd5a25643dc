/**
 * The only way out of a sandboxed host. Under bubblewrap a host has no network at all (its own
 * empty network namespace): it cannot reach the brokers' default vhost with guest/guest, another
 * student's vhost, or any other service on the machine. Each broker address a grader hands the
 * learner (the broker itself, or a grader's proxy in front of it) is instead a Unix socket in
 * the grading's shared folder, which the gateway forwards to that TCP address. The hosts see the
 * socket files; the grader chooses what they lead to.
 */
import { mkdirSync, unlinkSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { join } from "node:path";

export class Gateway {
  private readonly routes = new Map<string, { server: Server; path: string }>();
  private readonly sockets = new Set<Socket>();
  private n = 0;

  constructor(private readonly dir: string) {}

  /** The Unix socket that leads to host:port, opened on first use. */
  async socketFor(host: string, port: number): Promise<string> {
    const key = `${host}:${port}`;
    const have = this.routes.get(key);
    if (have) return have.path;
    // Unix socket paths are short (108 bytes): keep the name tiny.
    mkdirSync(this.dir, { recursive: true });
    const path = join(this.dir, `gw${++this.n}.sock`);
    const server = createServer((inbound) => {
      const outbound = connect({ host, port });
      for (const s of [inbound, outbound]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => {
          inbound.destroy();
          outbound.destroy();
        });
      }
      inbound.setNoDelay(true);
      outbound.setNoDelay(true);
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
    this.routes.set(key, { server, path });
    return path;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(
      [...this.routes.values()].map(
        ({ server, path }) =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            try {
              unlinkSync(path);
            } catch {
              // already gone
            }
          }),
      ),
    );
    this.routes.clear();
  }
}

/** host and port of "host:port" or an amqp URL. */
export function endpointOf(address: string): { host: string; port: number } {
  if (/^amqps?:\/\//.test(address)) {
    const u = new URL(address);
    return { host: u.hostname || "127.0.0.1", port: Number(u.port || (u.protocol === "amqps:" ? 5671 : 5672)) };
  }
  const i = address.lastIndexOf(":");
  return { host: address.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(address.slice(i + 1)) };
}
