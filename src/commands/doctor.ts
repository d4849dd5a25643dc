import { loadConfig, type ConfigFlags } from "../config.ts";

interface Finding {
  what: string;
  ok: boolean;
  detail: string;
  fix?: string;
}

/** Checks each thing the lab needs and prints the exact command that fixes each problem. */
export async function doctor(opts: ConfigFlags): Promise<number> {
  const config = loadConfig(opts);
  const { findJava, findMaven, dockerEngineAnswers } = await import("../brokers/tools.ts");
  const { probeKafka, probeRabbit } = await import("../brokers/probe.ts");
  const { kafkaJarsCached, kafkaLibDir, KAFKA_VERSION } = await import("../brokers/kafka-native.ts");
  const findings: Finding[] = [];

  const major = Number(process.versions.node.split(".")[0]);
  findings.push({
    what: "Node.js",
    ok: major >= 20,
    detail: process.version,
    fix: "install Node.js 20 (https://nodejs.org or your package manager)",
  });

  const [rabbit, kafka] = await Promise.all([probeRabbit(config.amqpUrl), probeKafka(config.kafkaBrokers)]);
  findings.push({ what: "RabbitMQ", ok: rabbit === null, detail: rabbit ?? `answers at ${config.amqpUrl.replace(/\/\/[^@]*@/, "//")}`, fix: "msglab up rabbitmq" });
  findings.push({ what: "Kafka", ok: kafka === null, detail: kafka ?? `answers at ${config.kafkaBrokers.join(",")}`, fix: "msglab up kafka" });

  try {
    const { default: Sqlite } = await import("better-sqlite3");
    const db = new Sqlite(":memory:");
    const v = (db.prepare("select sqlite_version() as v").get() as { v: string }).v;
    db.close();
    findings.push({ what: "SQLite", ok: true, detail: `better-sqlite3 with SQLite ${v}` });
  } catch (e) {
    findings.push({ what: "SQLite", ok: false, detail: (e as Error).message, fix: "npm rebuild better-sqlite3" });
  }

  const { bubblewrapStatus } = await import("../grading/sandbox.ts");
  const bw = bubblewrapStatus();
  findings.push({
    what: "Sandbox",
    ok: bw.ok || process.platform !== "linux",
    detail: bw.ok
      ? "bubblewrap + Node's permission model (submissions run with no network, a private /tmp, a read-only view)"
      : `${bw.why}. Gradings then use Node's permission model alone, which is weaker; \`msglab grade\` refuses it without --no-os-sandbox`,
    fix: "sudo apt-get install bubblewrap",
  });
  if (rabbit === null) {
    const { managementAvailable } = await import("../brokers/rabbit-admin.ts");
    const mgmt = await managementAvailable(config.amqpUrl);
    findings.push({
      what: "RabbitMQ vhosts",
      ok: mgmt,
      detail: mgmt ? "management API answers: each grading gets a vhost of its own" : "management API does not answer: vhosts fall back to rabbitmqctl (slow) or name prefixes",
      fix: "rabbitmq-plugins enable rabbitmq_management   (or: msglab up)",
    });
  }

  const docker = dockerEngineAnswers();
  const java = findJava();
  const mvn = findMaven();
  // Java and Maven only matter when Kafka has to be started here without Docker.
  const needNative = kafka !== null && !docker;
  findings.push({
    what: "Java 17+",
    ok: java.path !== null || !needNative,
    detail: java.version ?? java.problem ?? "",
    fix: "sudo apt-get install openjdk-17-jre-headless",
  });
  findings.push({ what: "Maven", ok: mvn !== null || !needNative || kafkaJarsCached(), detail: mvn ?? "not found", fix: "sudo apt-get install maven" });
  findings.push({
    what: `Kafka ${KAFKA_VERSION} jars`,
    ok: true,
    detail: kafkaJarsCached() ? `cached in ${kafkaLibDir()}` : "not cached yet (`msglab up` fetches them once)",
  });
  findings.push({ what: "Docker engine", ok: true, detail: docker ? "answers (msglab up can use docker compose)" : "none (msglab up starts native brokers)" });

  const { printLine, style } = await import("../ui/output.ts");
  for (const f of findings) {
    printLine(`${f.ok ? style.ok("✓") : style.bad("✗")} ${f.what.padEnd(16)} ${f.detail}`);
    if (!f.ok && f.fix) printLine(`    fix: ${style.code(f.fix)}`);
  }
  const bad = findings.filter((f) => !f.ok).length;
  printLine(bad ? style.bad(`\n${bad} problem(s) found.`) : style.ok("\nEverything the lab needs is here."));
  return bad ? 1 : 0;
}
