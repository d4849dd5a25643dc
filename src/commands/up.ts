import { loadConfig, type ConfigFlags } from "../config.ts";
import { usageError } from "../errors.ts";
import type { NeededBroker } from "../brokers/up.ts";

const ALL: NeededBroker[] = ["rabbitmq", "kafka"];

function pick(names: string[]): NeededBroker[] {
  if (names.length === 0) return ALL;
  for (const n of names) if (!ALL.includes(n as NeededBroker)) throw usageError(`Unknown broker "${n}": choose from ${ALL.join(", ")}.`);
  return names as NeededBroker[];
}

/** Starts whatever broker is missing; reuses what answers. */
export async function upCommand(names: string[], opts: ConfigFlags): Promise<number> {
  const config = loadConfig(opts);
  const { up } = await import("../brokers/up.ts");
  const { printLine, style } = await import("../ui/output.ts");
  const reports = await up(config, pick(names), (s) => printLine(style.dim(s)));
  for (const r of reports) {
    const how = r.how === "reused" ? "already running, reused" : `started (${r.how}) in ${(r.ms / 1000).toFixed(1)} s`;
    printLine(`${style.ok("✓")} ${r.broker.padEnd(8)} ${r.where}  ${style.dim(how)}`);
  }
  return 0;
}

/** Stops only what `msglab up` started. */
export async function downCommand(names: string[]): Promise<number> {
  const { readState, writeState } = await import("../brokers/state.ts");
  const { stopNativeKafka } = await import("../brokers/kafka-native.ts");
  const { stopNativeRabbit } = await import("../brokers/rabbit-native.ts");
  const { composeStop } = await import("../brokers/docker.ts");
  const { printLine, style } = await import("../ui/output.ts");
  const state = readState();
  for (const broker of pick(names)) {
    const how = state[broker];
    if (!how) {
      printLine(style.dim(`${broker}: not started by msglab, left alone.`));
      continue;
    }
    if (how === "docker") composeStop([broker]);
    else if (broker === "kafka") await stopNativeKafka();
    else stopNativeRabbit();
    delete state[broker];
    printLine(`${style.ok("✓")} ${broker} stopped`);
  }
  writeState(state);
  return 0;
}
