import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MsglabError } from "../errors.ts";
import { cacheDir, LAB_ROOT } from "../paths.ts";
import { probeKafka } from "./probe.ts";
import { findJava, findMaven } from "./tools.ts";

/** The broker version `msglab up` runs without Docker. 3.9 is the last 3.x line; kafkajs speaks its protocol. */
export const KAFKA_VERSION = "3.9.2";

export function kafkaLibDir(): string {
  return join(cacheDir(), `kafka-${KAFKA_VERSION}`, "lib");
}

function runDir(): string {
  return join(cacheDir(), "kafka-run");
}

export function kafkaPidFile(): string {
  return join(runDir(), "kafka.pid");
}

export function kafkaJarsCached(): boolean {
  return existsSync(join(kafkaLibDir(), "..", ".complete"));
}

/** Resolves the broker jars from Maven Central into the cache, once. */
export function ensureKafkaJars(log: (s: string) => void): void {
  if (kafkaJarsCached()) return;
  const mvn = findMaven();
  if (!mvn) throw new MsglabError("Kafka's jars come from Maven Central, but Maven is not installed: run `sudo apt-get install maven` (or use Docker: `docker compose up -d kafka`).");
  log(`resolving Kafka ${KAFKA_VERSION} jars from Maven Central into ${kafkaLibDir()} (once)…`);
  rmSync(kafkaLibDir(), { recursive: true, force: true });
  const res = spawnSync(
    mvn,
    ["-q", "-B", "-f", join(LAB_ROOT, "brokers", "kafka", "pom.xml"), "dependency:copy-dependencies", `-DoutputDirectory=${kafkaLibDir()}`, `-Dkafka.version=${KAFKA_VERSION}`],
    { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
  );
  if (res.status !== 0 || !existsSync(kafkaLibDir()) || !readdirSync(kafkaLibDir()).some((f) => f.startsWith("kafka_2.13"))) {
    const out = `${res.stdout ?? ""}${res.stderr ?? ""}`.trim().split("\n").slice(-10).join("\n");
    throw new MsglabError(`Maven could not fetch Kafka ${KAFKA_VERSION}:\n${out}\nCheck the network to Maven Central, then run \`msglab up\` again.`);
  }
  writeFileSync(join(kafkaLibDir(), "..", ".complete"), new Date().toISOString());
}

/**
 * One combined broker+controller node with test-friendly settings: no initial rebalance
 * delay, replication 1 everywhere, single-partition internal topics (fast to create).
 */
function serverProperties(host: string, port: number, dataDir: string): string {
  const controller = port + 1;
  return [
    "process.roles=broker,controller",
    "node.id=1",
    `controller.quorum.voters=1@${host}:${controller}`,
    `listeners=PLAINTEXT://${host}:${port},CONTROLLER://${host}:${controller}`,
    `advertised.listeners=PLAINTEXT://${host}:${port}`,
    "controller.listener.names=CONTROLLER",
    "inter.broker.listener.name=PLAINTEXT",
    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    `log.dirs=${dataDir}`,
    "num.partitions=1",
    "auto.create.topics.enable=true",
    "delete.topic.enable=true",
    "offsets.topic.replication.factor=1",
    "offsets.topic.num.partitions=1",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "transaction.state.log.num.partitions=1",
    "group.initial.rebalance.delay.ms=0",
    "log.cleaner.dedupe.buffer.size=2097152",
    "",
  ].join("\n");
}

const LOG4J = `log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
`;

/**
 * Starts Kafka from the cached jars with Java 17 and waits for a real metadata round trip.
 * The data folder is made fresh each start: graders use unique names, so there is nothing to
 * keep, and a clean log dir cannot trip over an earlier unclean shutdown.
 */
export async function startNativeKafka(broker: string, log: (s: string) => void): Promise<number> {
  const java = findJava();
  if (!java.path) throw new MsglabError(`Kafka needs Java 17 or newer: ${java.problem} Install it with \`sudo apt-get install openjdk-17-jre-headless\`.`);
  ensureKafkaJars(log);
  const [host = "127.0.0.1", portText = "9092"] = broker.split(":");
  const port = Number(portText);
  const dir = runDir();
  const dataDir = join(dir, "data");
  rmSync(dataDir, { recursive: true, force: true });
  mkdirSync(join(dir, "logs"), { recursive: true });
  writeFileSync(join(dir, "server.properties"), serverProperties(host, port, dataDir));
  writeFileSync(join(dir, "log4j.properties"), LOG4J);
  const cp = `${kafkaLibDir()}/*`;
  const clusterId = randomBytes(16).toString("base64url");
  const format = spawnSync(java.path, ["-cp", cp, "kafka.tools.StorageTool", "format", "-t", clusterId, "-c", join(dir, "server.properties")], {
    encoding: "utf8",
  });
  if (format.status !== 0) throw new MsglabError(`Formatting Kafka's storage failed:\n${format.stderr || format.stdout}`);

  const outFile = join(dir, "kafka.out");
  const out = openSync(outFile, "w");
  const child = spawn(
    java.path,
    [
      "-Xms256m",
      "-Xmx512m",
      "-XX:+UseSerialGC",
      "-XX:TieredStopAtLevel=1",
      "-Djava.awt.headless=true",
      `-Dlog4j.configuration=file:${join(dir, "log4j.properties")}`,
      `-Dkafka.logs.dir=${join(dir, "logs")}`,
      "-cp",
      cp,
      "kafka.Kafka",
      join(dir, "server.properties"),
    ],
    { detached: true, stdio: ["ignore", out, out] },
  );
  closeSync(out);
  child.unref();
  writeFileSync(kafkaPidFile(), String(child.pid));
  let exited = false;
  child.once("exit", () => (exited = true));

  const until = Date.now() + 90_000;
  for (;;) {
    if (exited) {
      const tail = readFileSync(outFile, "utf8").trim().split("\n").slice(-15).join("\n");
      throw new MsglabError(`Kafka exited while starting. Its log (${outFile}) ends with:\n${tail}`);
    }
    if ((await probeKafka([broker], 1500)) === null) return child.pid!;
    if (Date.now() > until) throw new MsglabError(`Kafka did not answer within 90 s. See ${outFile}.`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Stops the Kafka that `msglab up` started, if any. Returns true when it stopped one. */
export async function stopNativeKafka(): Promise<boolean> {
  if (!existsSync(kafkaPidFile())) return false;
  const pid = Number(readFileSync(kafkaPidFile(), "utf8"));
  rmSync(kafkaPidFile(), { force: true });
  if (!isAlive(pid)) return false;
  process.kill(pid, "SIGTERM");
  const until = Date.now() + 20_000;
  while (isAlive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
  if (isAlive(pid)) process.kill(pid, "SIGKILL");
  return true;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
