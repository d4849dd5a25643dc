/**
 * Commander wiring only. Each command lives in src/commands and is imported when it runs, so
 * `msglab list` never pays for amqplib, kafkajs or better-sqlite3. Only this file exits.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Command, CommanderError, Option } from "commander";
import { MsglabError } from "./errors.ts";
import { LAB_ROOT } from "./paths.ts";

const { version } = JSON.parse(readFileSync(join(LAB_ROOT, "package.json"), "utf8")) as { version: string };

const program = new Command()
  .name("msglab")
  .description("A hands-on lab for messaging and integration patterns, graded against real RabbitMQ, Kafka and SQLite.")
  .version(version)
  .exitOverride()
  .showHelpAfterError("(run `msglab --help` for usage)");

const brokerFlags = (cmd: Command) =>
  cmd
    .addOption(new Option("--amqp-url <url>", "RabbitMQ URL").env("MSGLAB_AMQP_URL"))
    .addOption(new Option("--kafka-brokers <list>", "Kafka brokers, host:port,…").env("MSGLAB_KAFKA_BROKERS"))
    .addOption(new Option("--workspace <dir>", "where your copies and progress live").env("MSGLAB_WORKSPACE"));

const gradeFlags = (cmd: Command) =>
  brokerFlags(cmd)
    .option("--seed <n>", "replay the faults of an earlier run")
    .option("--timeout <seconds>", "hard time limit for one exercise's grading")
    .option("--memory <MiB>", "memory cap of each process that runs your code (default 512)")
    .addOption(new Option("--sandbox <mode>", "bwrap (bubblewrap + Node's permission model) or permission (the model alone)").choices(["bwrap", "permission"]));

let exitCode = 0;
const set = (p: Promise<number>) => p.then((code) => void (exitCode = code));

brokerFlags(program.command("list").description("the course, with your status for each exercise").option("--json", "machine-readable output")).action(
  (opts) => set(import("./commands/list.ts").then((m) => m.list(opts))),
);

gradeFlags(
  program
    .command("run <exercise>")
    .description("show the brief, create your copy from the scaffold if needed, and grade it")
    .option("--file <path>", "grade this file instead of your workspace copy")
    .option("--json", "print the result as JSON (exercism's results.json v2)")
    .addOption(new Option("--reporter <name>", "output format").choices(["pretty", "json", "junit", "github-classroom"]))
    .option("--out <file>", "write the report to a file")
    .option("--watch", "grade again on every save")
    .option("--repeat <n>", "grade n times with different seeds and report passed k/n")
    .option("--only <check>", "grade only this check (a name or a number; repeat the flag for more)", (v: string, prev: string[] = []) => [...prev, v]),
).action((id: string, opts) => set(import("./commands/run.ts").then((m) => m.run(id, opts))));

gradeFlags(
  program
    .command("check")
    .description("grade every exercise you started (or every reference solution)")
    .option("--solutions", "grade the reference solutions instead")
    .addOption(new Option("--reporter <name>", "output format").choices(["pretty", "json", "junit", "github-classroom"]).default("pretty"))
    .option("--out <file>", "write the json/junit report to a file"),
).action((opts) => set(import("./commands/check.ts").then((m) => m.check(opts))));

gradeFlags(
  program
    .command("grade <roster> [dirs...]")
    .description("grade a whole class (instructors): <roster> has a folder per student; `grade merge <dir>…` joins shards")
    .option("--exercises <ids>", "the assignment, comma-separated (default: whatever each student has)")
    .option("--out <dir>", "where the gradebook and reports go", "msglab-grades")
    .option("--jobs <n>", "gradings in parallel (default: twice the cores, 2 to 8)")
    .option("--shard <i/n>", "grade a deterministic slice of the class (for CI matrix jobs)")
    .option("--force", "regrade even what is unchanged since it was graded")
    .option("--before <date>", "grade each git repository as of its last commit before this date")
    .option("--no-os-sandbox", "allow grading without bubblewrap (Node's permission model alone; recorded)")
    .option("--json", "print the summary as JSON"),
).action((roster: string, dirs: string[], opts) => set(import("./commands/grade.ts").then((m) => m.grade(roster, dirs, opts))));

brokerFlags(program.command("hint <exercise>").description("the next hint for an exercise")).action((id: string, opts) =>
  set(import("./commands/hint.ts").then((m) => m.hint(id, opts))),
);
program
  .command("solution <exercise>")
  .description("reveal the reference solution (asks first)")
  .option("-y, --yes", "do not ask")
  .action((id: string, opts) => set(import("./commands/solution.ts").then((m) => m.solution(id, opts))));
brokerFlags(program.command("reset <exercise>").description("restore the scaffold (your copy is backed up)")).action((id: string, opts) =>
  set(import("./commands/reset.ts").then((m) => m.reset(id, opts))),
);
program
  .command("quiz [exercise]")
  .description("concept checks: when to use a pattern and when not to")
  .action((id: string | undefined) => set(import("./commands/quiz.ts").then((m) => m.quiz(id))));
brokerFlags(program.command("up [brokers...]").description("start RabbitMQ and Kafka if they are not running")).action((names: string[], opts) =>
  set(import("./commands/up.ts").then((m) => m.upCommand(names, opts))),
);
program
  .command("down [brokers...]")
  .description("stop the brokers `msglab up` started")
  .action((names: string[]) => set(import("./commands/up.ts").then((m) => m.downCommand(names))));
brokerFlags(program.command("doctor").description("check Node, Java, Maven, the brokers and SQLite, and say how to fix each problem")).action((opts) =>
  set(import("./commands/doctor.ts").then((m) => m.doctor(opts))),
);
try {
  // No arguments at all opens the interactive menu; anything else is parsed strictly.
  if (process.argv.length <= 2) exitCode = await (await import("./commands/menu.ts")).menu({});
  else await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // Help and version are not errors; every other parse problem is a usage error.
    exitCode = e.exitCode === 0 || e.code === "commander.helpDisplayed" || e.code === "commander.version" ? 0 : 2;
  } else if (e instanceof MsglabError) {
    const { printError } = await import("./ui/output.ts");
    printError(e.message);
    exitCode = e.exitCode;
  } else if ((e as { name?: string }).name === "ExitPromptError") {
    exitCode = 130; // Ctrl-C at a prompt
  } else {
    console.error(e);
    exitCode = 1;
  }
}
process.exit(exitCode);
