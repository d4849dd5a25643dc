/**
 * Kafka has no vhosts. Topics and groups a submission made under names of its own would outlive
 * the grading, so the grading notes what existed before it and, at the end, removes what is new
 * and belongs to no grading's namespace. Only on a local broker: on a shared cluster, deleting
 * what another user may have made is not ours to do, so there it is reported instead.
 */
import { KafkaKit } from "./kafka.ts";

/** Names every grading's namespace uses (msglab.<run>.… and msglab-<run>…). */
const NAMESPACED = /^msglab[.-][0-9a-f]{8}/;

function isLocal(brokers: string[]): boolean {
  return brokers.every((b) => /^(127\.0\.0\.1|localhost|\[::1\]):\d+$/.test(b));
}

export class KafkaLeftovers {
  readonly warnings: string[] = [];
  private constructor(
    private readonly brokers: string[],
    private readonly topics: Set<string>,
    private readonly groups: Set<string>,
  ) {}

  static async snapshot(brokers: string[]): Promise<KafkaLeftovers> {
    const kit = new KafkaKit(brokers, "msglab-leftovers");
    try {
      const admin = await kit.admin();
      const [topics, groups] = await Promise.all([admin.listTopics(), admin.listGroups()]);
      return new KafkaLeftovers(brokers, new Set(topics), new Set(groups.groups.map((g) => g.groupId)));
    } finally {
      await kit.closeAll();
    }
  }

  /** Removes (or reports) what appeared since the snapshot: this run's, and no one's. */
  async sweep(...ownPrefixes: string[]): Promise<void> {
    const kit = new KafkaKit(this.brokers, "msglab-leftovers");
    try {
      const admin = await kit.admin();
      const [topics, groups] = await Promise.all([admin.listTopics(), admin.listGroups()]);
      const mine = (n: string) => ownPrefixes.some((p) => n.startsWith(p)) || !NAMESPACED.test(n);
      const newTopics = topics.filter((t) => !this.topics.has(t) && !t.startsWith("__") && mine(t));
      const newGroups = groups.groups.map((g) => g.groupId).filter((g) => !this.groups.has(g) && mine(g));
      if (newTopics.length + newGroups.length === 0) return;
      if (!isLocal(this.brokers)) {
        const foreign = [...newTopics, ...newGroups].filter((n) => !NAMESPACED.test(n));
        if (foreign.length) this.warnings.push(`Kafka: this grading left ${foreign.join(", ")} on a shared broker (not removed: it is not local).`);
        return;
      }
      if (newTopics.length) await admin.deleteTopics({ topics: newTopics, timeout: 5000 }).catch(() => {});
      if (newGroups.length) await admin.deleteGroups(newGroups).catch(() => {});
    } finally {
      await kit.closeAll();
    }
  }
}
