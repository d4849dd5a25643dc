import type { ChannelModel } from "amqplib";
import { LabError } from "./fail.ts";

/** Connections a check opens; all closed at teardown, so no consumer outlives its check. */
export class RabbitKit {
  private readonly open: ChannelModel[] = [];
  constructor(readonly url: string) {}

  /**
   * A fresh connection. Use one for the grader's own view of the broker and hand the
   * learner's code another: a channel the learner breaks must not blind the grader. `url`: this
   * grading's vhost by default; a proxy's URL for it (`proxy.urlFor(t.amqpUrl)`) to put the
   * grader's own traffic on the wire a check cuts.
   */
  async connect(url = this.url): Promise<ChannelModel> {
    const amqp = await import("amqplib");
    let conn: ChannelModel;
    try {
      conn = await amqp.connect(url, { noDelay: true });
    } catch (e) {
      throw new LabError(`RabbitMQ is not reachable at ${redact(url)} (${(e as Error).message}): run \`msglab up\`.`);
    }
    // A closed connection's late error must not crash the grading process.
    conn.on("error", () => {});
    this.open.push(conn);
    return conn;
  }

  async closeAll(): Promise<void> {
    await Promise.allSettled(this.open.splice(0).map((c) => c.close()));
  }

  /** Deletes queues and exchanges on a connection of its own. */
  async deleteAll(resources: { kind: string; name: string }[]): Promise<string[]> {
    return deleteRabbitResources(this.url, resources);
  }
}

export async function deleteRabbitResources(url: string, resources: { kind: string; name: string }[]): Promise<string[]> {
  const mine = resources.filter((r) => r.kind === "queue" || r.kind === "exchange");
  if (mine.length === 0) return [];
  const amqp = await import("amqplib");
  const conn = await amqp.connect(url, { noDelay: true });
  conn.on("error", () => {});
  const done: string[] = [];
  try {
    for (const r of mine) {
      // A failed delete closes the channel, so each delete gets its own.
      const ch = await conn.createChannel();
      ch.on("error", () => {});
      try {
        if (r.kind === "queue") await ch.deleteQueue(r.name);
        else await ch.deleteExchange(r.name);
        done.push(r.name);
        await ch.close();
      } catch {
        // Already gone or never made: either way nothing is left behind.
        done.push(r.name);
      }
    }
  } finally {
    await conn.close().catch(() => {});
  }
  return done;
}

export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString().replace(/\/$/, "");
  } catch {
    return url;
  }
}
